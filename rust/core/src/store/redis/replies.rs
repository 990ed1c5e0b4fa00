//! Replies from a byte stream: finds where each whole RESP2 reply ends (the only part the
//! redis crate leaves to a streaming caller) and lets the crate parse it. Sizes are bounded,
//! so that a confused or hostile peer costs a closed connection, never unbounded memory.

use ::redis::{parse_redis_value, Value};

/// Longest header or simple line (`+OK`, `-ERR ...`, `$12`).
const MAX_LINE: usize = 64 * 1024;
/// Largest bulk string: far above any payload the configuration allows.
const MAX_BULK: usize = 16 * 1024 * 1024;
/// Most elements of one reply, nested arrays included.
const MAX_ELEMENTS: usize = 1 << 16;

/// The stream is not RESP2, or breaks a bound: the connection cannot be trusted any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

/// Bytes received and not yet parsed.
#[derive(Debug, Default)]
pub struct Replies {
    buffer: Vec<u8>,
    start: usize,
}

impl Replies {
    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        }
        self.buffer.extend_from_slice(data);
    }

    /// The next whole reply, if one has arrived.
    ///
    /// # Errors
    /// [`Malformed`] when the stream cannot be a sequence of RESP2 replies.
    pub fn next_reply(&mut self) -> Result<Option<Value>, Malformed> {
        let pending = &self.buffer[self.start..];
        let Some(length) = frame_length(pending)? else {
            if self.start > 0 {
                // Keep only what is still to come.
                self.buffer.drain(..self.start);
                self.start = 0;
            }
            return Ok(None);
        };
        let value = parse_redis_value(&pending[..length])
            .map_err(|error| Malformed(format!("unparsable reply: {error}")))?;
        self.start += length;
        Ok(Some(value))
    }

    /// How many bytes wait to be parsed.
    pub fn buffered(&self) -> usize {
        self.buffer.len() - self.start
    }
}

/// The length of the first whole reply in `data`, or `None` if it is not complete yet.
fn frame_length(data: &[u8]) -> Result<Option<usize>, Malformed> {
    let mut position = 0;
    // Elements still to read: arrays add theirs, so nesting needs no stack.
    let mut outstanding: usize = 1;
    while outstanding > 0 {
        let Some((line, next)) = line(data, position)? else {
            return Ok(None);
        };
        outstanding -= 1;
        position = next;
        let (kind, rest) = line.split_first().ok_or_else(|| malformed("empty line"))?;
        match kind {
            b'+' | b'-' | b':' => {}
            b'$' => {
                if let Some(length) = length(rest, MAX_BULK)? {
                    let end = position + length + 2;
                    if data.len() < end {
                        return Ok(None);
                    }
                    if &data[end - 2..end] != b"\r\n" {
                        return Err(malformed("bulk string not followed by CRLF"));
                    }
                    position = end;
                }
            }
            b'*' => {
                if let Some(count) = length(rest, MAX_ELEMENTS)? {
                    outstanding += count;
                    if outstanding > MAX_ELEMENTS {
                        return Err(malformed("too many elements"));
                    }
                }
            }
            _ => return Err(malformed("unknown reply type")),
        }
    }
    Ok(Some(position))
}

/// The line starting at `start` (without its CRLF) and where the next one starts.
fn line(data: &[u8], start: usize) -> Result<Option<(&[u8], usize)>, Malformed> {
    let rest = &data[start..];
    let window = &rest[..rest.len().min(MAX_LINE + 2)];
    match window.windows(2).position(|pair| pair == b"\r\n") {
        Some(end) => Ok(Some((&rest[..end], start + end + 2))),
        None if window.len() > MAX_LINE => Err(malformed("line too long")),
        None => Ok(None),
    }
}

/// A length field: `-1` (null) is `None`.
fn length(text: &[u8], max: usize) -> Result<Option<usize>, Malformed> {
    if text == b"-1" {
        return Ok(None);
    }
    let length: usize = std::str::from_utf8(text)
        .ok()
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| malformed("bad length"))?;
    if length > max {
        return Err(malformed("length beyond the bound"));
    }
    Ok(Some(length))
}

fn malformed(why: &str) -> Malformed {
    Malformed(why.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<Value> {
        let mut replies = Replies::default();
        let mut values = Vec::new();
        for chunk in chunks {
            replies.extend(chunk);
            while let Some(value) = replies.next_reply().unwrap() {
                values.push(value);
            }
        }
        assert_eq!(replies.buffered(), 0);
        values
    }

    #[test]
    fn replies_split_anywhere_come_out_whole() {
        let stream: &[u8] =
            b"+OK\r\n:42\r\n$5\r\nhe\r\no\r\n$-1\r\n*2\r\n*1\r\n:1\r\n$0\r\n\r\n-NOSCRIPT x\r\n*-1\r\n";
        let whole = all(&[stream]);
        assert_eq!(whole.len(), 7);
        assert_eq!(whole[2], Value::BulkString(b"he\r\no".to_vec()));
        for split in 0..stream.len() {
            assert_eq!(all(&[&stream[..split], &stream[split..]]), whole, "{split}");
        }
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(all(&bytewise), whole);
    }

    #[test]
    fn broken_or_oversized_streams_are_refused() {
        for bad in [
            &b"?1\r\n"[..],
            b"$abc\r\n",
            b"$3\r\nabcXY",
            b"*99999999\r\n",
            b"$99999999999\r\n",
        ] {
            let mut replies = Replies::default();
            replies.extend(bad);
            assert!(replies.next_reply().is_err(), "{bad:?}");
        }
        let mut replies = Replies::default();
        replies.extend(&vec![b'+'; MAX_LINE + 3]);
        assert!(replies.next_reply().is_err());
    }
}
