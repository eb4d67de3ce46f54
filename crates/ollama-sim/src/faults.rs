//! Fault injection, so that reliability tests can make the target misbehave on demand.
//!
//! Faults are set at start (`--fail-rate`, `--drop-rate`, `--stall-rate`, `--busy-rate`,
//! `--error-rate` with `--error-status`)
//! and changed at runtime with `POST /sim/faults`, which takes a partial JSON object and
//! answers with the whole current set. Rates are probabilities in `[0, 1]`, drawn from a
//! seeded generator so a run is reproducible. They apply to inference endpoints only
//! (chat, generate, embeddings and their OpenAI forms); listings and `/sim` stay healthy.
//! `hold` makes inference requests wait, counted in `/sim/stats` as `held`, until it is
//! turned off, then go on as usual: tests use it to keep a request open for exactly as
//! long as they need. `refuse_connections` closes the listening socket itself, so clients get "connection
//! refused"; it ends after `refuse_for` if given, or through the control listener
//! (`--control-addr`) or the in-process handle.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The current fault settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Fraction of requests answered `500` with a runner-crash error before any output.
    pub fail_rate: f64,
    /// Fraction of responses whose connection is closed halfway through the body.
    pub drop_rate: f64,
    /// Fraction of requests that never get a response (until the client gives up).
    pub stall_rate: f64,
    /// Fraction of requests answered with Ollama's `503` "server busy" error.
    pub busy_rate: f64,
    /// Fraction of requests answered with `error_status` before any output, as a
    /// rate limiter (429) or a proxy in front of Ollama (502, 504) would.
    pub error_rate: f64,
    /// The status of the `error_rate` answers, 400 to 599.
    pub error_status: u16,
    /// Inference requests wait until this is turned off.
    pub hold: bool,
    /// Refuse every connection: the listening socket is closed.
    pub refuse_connections: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            fail_rate: 0.0,
            drop_rate: 0.0,
            stall_rate: 0.0,
            busy_rate: 0.0,
            error_rate: 0.0,
            error_status: 502,
            hold: false,
            refuse_connections: false,
        }
    }
}

/// A partial update, as `POST /sim/faults` takes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsUpdate {
    pub fail_rate: Option<f64>,
    pub drop_rate: Option<f64>,
    pub stall_rate: Option<f64>,
    pub busy_rate: Option<f64>,
    pub error_rate: Option<f64>,
    pub error_status: Option<u16>,
    pub hold: Option<bool>,
    pub refuse_connections: Option<bool>,
    /// With `refuse_connections: true`, accept connections again after this long
    /// (humantime form, e.g. `"2s"`).
    pub refuse_for: Option<String>,
    /// `true` turns every fault off first, then applies the other fields.
    #[serde(default)]
    pub clear: bool,
}

/// What the simulator does to one inference request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Fail,
    Busy,
    Stall,
    Drop,
    /// Answer with this status.
    Status(u16),
}

impl Faults {
    /// Checks every rate is a probability.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("fail_rate", self.fail_rate),
            ("drop_rate", self.drop_rate),
            ("stall_rate", self.stall_rate),
            ("busy_rate", self.busy_rate),
            ("error_rate", self.error_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        if !(400..=599).contains(&self.error_status) {
            return Err(format!(
                "error_status must be between 400 and 599, got {}",
                self.error_status
            ));
        }
        Ok(())
    }

    /// Applies a partial update; returns the refusal duration it asked for, if any.
    pub fn apply(&mut self, update: &FaultsUpdate) -> Result<Option<Duration>, String> {
        let mut next = if update.clear {
            Faults::default()
        } else {
            self.clone()
        };
        next.fail_rate = update.fail_rate.unwrap_or(next.fail_rate);
        next.drop_rate = update.drop_rate.unwrap_or(next.drop_rate);
        next.stall_rate = update.stall_rate.unwrap_or(next.stall_rate);
        next.busy_rate = update.busy_rate.unwrap_or(next.busy_rate);
        next.error_rate = update.error_rate.unwrap_or(next.error_rate);
        next.error_status = update.error_status.unwrap_or(next.error_status);
        next.hold = update.hold.unwrap_or(next.hold);
        next.refuse_connections = update.refuse_connections.unwrap_or(next.refuse_connections);
        next.validate()?;
        let refuse_for = match &update.refuse_for {
            Some(text) => {
                Some(humantime::parse_duration(text).map_err(|e| format!("refuse_for: {e}"))?)
            }
            None => None,
        };
        *self = next;
        Ok(refuse_for)
    }

    /// Picks the fault for one request from a uniform draw in `[0, 1)` per kind.
    pub fn pick(&self, draws: [f64; 5]) -> Fault {
        if draws[0] < self.stall_rate {
            Fault::Stall
        } else if draws[1] < self.busy_rate {
            Fault::Busy
        } else if draws[2] < self.fail_rate {
            Fault::Fail
        } else if draws[4] < self.error_rate {
            Fault::Status(self.error_status)
        } else if draws[3] < self.drop_rate {
            Fault::Drop
        } else {
            Fault::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_of_one_always_fire_and_zero_never() {
        let mut faults = Faults::default();
        assert_eq!(faults.pick([0.0; 5]), Fault::None);
        faults.error_rate = 1.0;
        faults.error_status = 429;
        assert_eq!(faults.pick([0.99; 5]), Fault::Status(429));
        faults.fail_rate = 1.0;
        assert_eq!(faults.pick([0.99; 5]), Fault::Fail);
        faults.stall_rate = 1.0;
        assert_eq!(faults.pick([0.5; 5]), Fault::Stall);
    }

    #[test]
    fn updates_are_partial_and_validated() {
        let mut faults = Faults::default();
        let update: FaultsUpdate = serde_json::from_str(r#"{"drop_rate":0.5}"#).unwrap();
        assert_eq!(faults.apply(&update).unwrap(), None);
        assert_eq!(faults.drop_rate, 0.5);
        let update: FaultsUpdate =
            serde_json::from_str(r#"{"refuse_connections":true,"refuse_for":"2s"}"#).unwrap();
        assert_eq!(faults.apply(&update).unwrap(), Some(Duration::from_secs(2)));
        assert!(faults.refuse_connections && faults.drop_rate == 0.5);
        let bad: FaultsUpdate = serde_json::from_str(r#"{"fail_rate":2}"#).unwrap();
        assert!(faults.apply(&bad).is_err());
        assert_eq!(faults.fail_rate, 0.0);
        let clear: FaultsUpdate = serde_json::from_str(r#"{"clear":true}"#).unwrap();
        faults.apply(&clear).unwrap();
        assert_eq!(faults, Faults::default());
        assert!(serde_json::from_str::<FaultsUpdate>(r#"{"nope":1}"#).is_err());
        let bad: FaultsUpdate = serde_json::from_str(r#"{"error_status":200}"#).unwrap();
        assert!(faults.apply(&bad).is_err(), "only error statuses");
        let update: FaultsUpdate =
            serde_json::from_str(r#"{"error_rate":1,"error_status":504,"hold":true}"#).unwrap();
        faults.apply(&update).unwrap();
        assert_eq!((faults.error_rate, faults.error_status), (1.0, 504));
        assert!(faults.hold);
    }
}
