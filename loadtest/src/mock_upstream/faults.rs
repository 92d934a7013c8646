//! Fault injection chosen by the request's `model` field.
//!
//! Skald's failure handling (upstream drops, hangs, errors, slow first tokens)
//! can only be tested if the upstream misbehaves on demand; encoding the fault
//! in the model name lets each test request pick its own behaviour through an
//! unmodified OpenAI client.

/// What a request asks the mock to do wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fault {
    /// Normal behaviour.
    None,
    /// `mock-drop-after-N`: send N tokens, then abort the connection.
    DropAfter(u32),
    /// `mock-hang`: never send response headers.
    Hang,
    /// `mock-hang-after-N`: send N tokens, then go silent with the connection open.
    HangAfter(u32),
    /// `mock-error-500`: answer HTTP 500 with an OpenAI-style error body.
    Error500,
    /// `mock-slow-first-MS`: wait MS milliseconds before the first token.
    SlowFirst(u64),
    /// `mock-stamped`: normal pacing, but each token is `@<µs since the Unix
    /// epoch when the mock sent it> ` (the measurement mode; not a fault).
    Stamped,
}

impl Fault {
    /// Parses the fault from a model name; unknown or malformed names are normal.
    pub(super) fn from_model(model: &str) -> Fault {
        if model == "mock-hang" {
            return Fault::Hang;
        }
        if model == "mock-error-500" {
            return Fault::Error500;
        }
        if model == "mock-stamped" {
            return Fault::Stamped;
        }
        if let Some(n) = model.strip_prefix("mock-drop-after-") {
            return n.parse().map_or(Fault::None, Fault::DropAfter);
        }
        if let Some(n) = model.strip_prefix("mock-hang-after-") {
            return n.parse().map_or(Fault::None, Fault::HangAfter);
        }
        if let Some(ms) = model.strip_prefix("mock-slow-first-") {
            return ms.parse().map_or(Fault::None, Fault::SlowFirst);
        }
        Fault::None
    }
}

#[cfg(test)]
mod tests {
    use super::Fault;

    #[test]
    fn parses_every_fault() {
        assert_eq!(Fault::from_model("gpt-4o-mini"), Fault::None);
        assert_eq!(Fault::from_model("mock-drop-after-3"), Fault::DropAfter(3));
        assert_eq!(Fault::from_model("mock-hang"), Fault::Hang);
        assert_eq!(Fault::from_model("mock-hang-after-7"), Fault::HangAfter(7));
        assert_eq!(Fault::from_model("mock-error-500"), Fault::Error500);
        assert_eq!(
            Fault::from_model("mock-slow-first-250"),
            Fault::SlowFirst(250)
        );
        assert_eq!(Fault::from_model("mock-stamped"), Fault::Stamped);
        assert_eq!(Fault::from_model("mock-drop-after-x"), Fault::None);
        assert_eq!(Fault::from_model("mock-hang-after-"), Fault::None);
    }
}
