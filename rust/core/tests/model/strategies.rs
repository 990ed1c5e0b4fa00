//! Proptest strategies generating [`Op`] sequences.

use proptest::prelude::*;

use crate::ops::{
    Advance, Condition, ContentTypeChoice, Length, Op, OtherMethod, Pick, Target, Upload,
    GARBAGE_IDS, INVALID_TYPES, MALFORMED_LENGTHS, MALFORMED_TAGS, VALID_TYPES,
};
use crate::system::MAX_PAYLOAD;

pub(crate) fn pick() -> impl Strategy<Value = Pick> {
    any::<u16>().prop_map(Pick)
}

pub(crate) fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(Vec::new()),
        6 => prop::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD),
        2 => "[ -~]{0,40}".prop_map(String::into_bytes),
        2 => prop::collection::vec(any::<u8>(), MAX_PAYLOAD),
        2 => prop::collection::vec(any::<u8>(), MAX_PAYLOAD + 1),
        1 => prop::collection::vec(any::<u8>(), MAX_PAYLOAD + 2..=MAX_PAYLOAD * 3),
        1 => Just(vec![0xff, 0xfe, 0x00, 0xc3, 0x28]),
    ]
}

pub(crate) fn length_strategy() -> impl Strategy<Value = Length> {
    prop_oneof![
        24 => Just(Length::Exact),
        1 => Just(Length::Missing),
        1 => (0..=MAX_PAYLOAD as u64 * 2).prop_map(Length::Declared),
        1 => prop::sample::select(MALFORMED_LENGTHS).prop_map(Length::Malformed),
        1 => any::<bool>().prop_map(|agreeing| Length::Twice { agreeing }),
        1 => any::<bool>().prop_map(|with_length| Length::Chunked { with_length }),
    ]
}

pub(crate) fn content_type_strategy() -> impl Strategy<Value = ContentTypeChoice> {
    prop_oneof![
        16 => prop::sample::select(VALID_TYPES).prop_map(ContentTypeChoice::Valid),
        1 => prop::sample::select(INVALID_TYPES).prop_map(ContentTypeChoice::Invalid),
        1 => Just(ContentTypeChoice::Missing),
        1 => Just(ContentTypeChoice::Twice),
    ]
}

pub(crate) fn upload_strategy() -> impl Strategy<Value = Upload> {
    (body_strategy(), length_strategy(), content_type_strategy()).prop_map(
        |(body, length, content_type)| Upload {
            body,
            length,
            content_type,
        },
    )
}

pub(crate) fn target_strategy() -> impl Strategy<Value = Target> {
    prop_oneof![
        24 => pick().prop_map(Target::Known),
        1 => pick().prop_map(Target::KnownWithQuery),
        1 => pick().prop_map(Target::KnownEscaped),
        1 => pick().prop_map(Target::KnownLowercase),
        1 => pick().prop_map(Target::KnownNested),
        1 => Just(Target::Unknown),
        1 => prop::sample::select(GARBAGE_IDS).prop_map(Target::Garbage),
        1 => Just(Target::Create),
    ]
}

pub(crate) fn condition_strategy() -> impl Strategy<Value = Condition> {
    prop_oneof![
        4 => Just(Condition::Missing),
        8 => Just(Condition::Current),
        3 => Just(Condition::CurrentWeak),
        4 => pick().prop_map(Condition::Stale),
        2 => pick().prop_map(Condition::Issued),
        2 => Just(Condition::Star),
        1 => Just(Condition::ListWithCurrent),
        1 => "[a-z0-9]{1,12}".prop_map(Condition::Fresh),
        2 => prop::sample::select(MALFORMED_TAGS).prop_map(Condition::Malformed),
        1 => Just(Condition::NonAscii),
    ]
}

pub(crate) fn advance_strategy() -> impl Strategy<Value = Advance> {
    prop_oneof![
        3 => (0..=3_000u64).prop_map(Advance::Millis),
        2 => (1..=10u64).prop_map(Advance::Seconds),
        1 => (0..=2_000u64).prop_map(Advance::PastTtl),
        1 => pick().prop_map(Advance::ToExpiry),
        1 => pick().prop_map(Advance::JustBeforeExpiry),
    ]
}

pub(crate) fn other_method_strategy() -> impl Strategy<Value = OtherMethod> {
    prop::sample::select(
        &[
            OtherMethod::Patch,
            OtherMethod::Post,
            OtherMethod::Options,
            OtherMethod::Trace,
            OtherMethod::Custom,
        ][..],
    )
}

pub(crate) fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => upload_strategy().prop_map(Op::Create),
        8 => (target_strategy(), condition_strategy(), any::<bool>()).prop_map(
            |(target, condition, head)| {
                let head = head && target_is_plain(&target);
                Op::Get { target, condition, head }
            }
        ),
        8 => (target_strategy(), condition_strategy(), upload_strategy()).prop_map(
            |(target, condition, upload)| Op::Put { target, condition, upload }
        ),
        1 => target_strategy().prop_map(Op::Delete),
        1 => (target_strategy(), other_method_strategy()).prop_map(|(t, m)| Op::Other(t, m)),
        3 => advance_strategy().prop_map(Op::Advance),
        1 => Just(Op::Maintain),
    ]
}

/// HEAD only on plain session URLs, so that most HEADs reach a session.
pub(crate) fn target_is_plain(target: &Target) -> bool {
    matches!(target, Target::Known(_))
}

pub(crate) fn ops_strategy(max_len: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op_strategy(), 1..=max_len)
}
