//! One target as the operator writes it: `URL[,name=NAME][,slots=N][,places=M]`,
//! the form of the simulator's `--model`.
//!
//! It is parsed apart from the settings so that `--target` and `FOREMAN_TARGETS`
//! (the same specs separated by spaces) share one grammar and one set of messages.
//! The URL may be the word `sim`, which `--simulate` replaces with the address of a
//! simulator it starts for that target.

/// Most parallel requests one target may be given (`OLLAMA_NUM_PARALLEL` is rarely
/// above 8; this only catches typos).
pub const MAX_SLOTS: usize = 64;
/// Most models one target may be told it keeps loaded (`OLLAMA_MAX_LOADED_MODELS`).
pub const MAX_PLACES: usize = 32;
/// The URL that stands for a simulator started by `--simulate`.
pub const SIM_URL: &str = "sim";

/// One Ollama server foreman schedules for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// Base URL without a trailing slash, or [`SIM_URL`].
    pub url: String,
    /// How operators and `X-Foreman-Target` name it; the URL's `host:port` unless
    /// given. Empty for a `sim` target without a name: the settings number those.
    pub name: String,
    /// Requests it runs at once for one loaded model (its `OLLAMA_NUM_PARALLEL`).
    pub slots: usize,
    /// Models it keeps loaded at once (its `OLLAMA_MAX_LOADED_MODELS`, or fewer when
    /// its VRAM holds fewer).
    pub places: usize,
}

impl TargetSpec {
    /// A target of one slot and one place at `url` (checked as [`parse_target`] does).
    pub fn single(url: &str) -> Result<TargetSpec, String> {
        let url = checked_url(url)?;
        Ok(TargetSpec {
            name: default_name(&url),
            url,
            slots: 1,
            places: 1,
        })
    }

    /// True for a target `--simulate` is to start.
    pub fn is_simulated(&self) -> bool {
        self.url == SIM_URL
    }
}

/// Parses `URL[,name=NAME][,slots=N][,places=M]`.
pub fn parse_target(spec: &str) -> Result<TargetSpec, String> {
    let mut parts = spec.trim().split(',');
    let url = parts.next().unwrap_or_default().trim();
    if url.is_empty() {
        return Err(format!("{spec:?}: a target starts with its URL"));
    }
    let mut target = if url == SIM_URL {
        TargetSpec {
            url: SIM_URL.to_string(),
            name: String::new(),
            slots: 1,
            places: 1,
        }
    } else {
        TargetSpec::single(url).map_err(|reason| format!("{spec:?}: {reason}"))?
    };
    let mut seen = Vec::new();
    for part in parts {
        let Some((key, value)) = part.split_once('=') else {
            return Err(format!(
                "{spec:?}: {part:?} is not KEY=VALUE (keys: name, slots, places)"
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        if seen.contains(&key) {
            return Err(format!("{spec:?}: {key} is given twice"));
        }
        seen.push(key);
        match key {
            "name" => target.name = checked_name(value).map_err(|r| format!("{spec:?}: {r}"))?,
            "slots" => target.slots = count(value, "slots", MAX_SLOTS, spec)?,
            "places" => target.places = count(value, "places", MAX_PLACES, spec)?,
            _ => {
                return Err(format!(
                    "{spec:?}: unknown key {key:?} (keys: name, slots, places)"
                ));
            }
        }
    }
    Ok(target)
}

/// An http(s) URL without its trailing slash.
fn checked_url(url: &str) -> Result<String, String> {
    let url = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?}: the scheme must be http or https"));
    }
    if parsed.host_str().is_none() {
        return Err(format!("{url:?}: the URL names no host"));
    }
    Ok(url.to_string())
}

/// `host:port` of a checked URL, the port defaulted by its scheme.
fn default_name(url: &str) -> String {
    let parsed = reqwest::Url::parse(url).expect("a checked URL");
    let host = parsed.host_str().unwrap_or_default();
    match parsed.port_or_known_default() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// Names travel in the `X-Foreman-Target` header and in logs: printable ASCII
/// without spaces or commas.
fn checked_name(name: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._:-[]".contains(c);
    if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
        return Err(format!(
            "name {name:?} must be 1 to 64 of letters, digits and . _ : - [ ]"
        ));
    }
    Ok(name.to_string())
}

fn count(value: &str, key: &str, max: usize, spec: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{spec:?}: {key} must be a whole number from 1 to {max}, not {value:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str, name: &str, slots: usize, places: usize) -> TargetSpec {
        TargetSpec {
            url: url.into(),
            name: name.into(),
            slots,
            places,
        }
    }

    #[test]
    fn specs_parse_with_defaults() {
        let check = |spec: &str, expected: TargetSpec| assert_eq!(parse_target(spec), Ok(expected));
        check(
            "http://gpu0:11434/",
            target("http://gpu0:11434", "gpu0:11434", 1, 1),
        );
        check(
            "https://ollama.example",
            target("https://ollama.example", "ollama.example:443", 1, 1),
        );
        check(
            "http://10.0.0.2",
            target("http://10.0.0.2", "10.0.0.2:80", 1, 1),
        );
        check(
            "http://10.0.0.2:11434,name=big,slots=4,places=2",
            target("http://10.0.0.2:11434", "big", 4, 2),
        );
        check(" http://a:1 , places=3 ", target("http://a:1", "a:1", 1, 3));
        check("sim,slots=4,places=2", target("sim", "", 4, 2));
        check("sim,name=gpu1", target("sim", "gpu1", 1, 1));
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let error = |spec: &str| parse_target(spec).unwrap_err();
        assert!(error("").contains("starts with its URL"));
        assert!(error("ftp://a:1").contains("http or https"));
        assert!(
            error("gpu0:11434").contains("http or https"),
            "{}",
            error("gpu0:11434")
        );
        assert!(error("not a url").contains("not a url"));
        assert!(error("http://a:1,slots=0").contains("slots must be a whole number from 1 to 64"));
        assert!(error("http://a:1,slots=65").contains("from 1 to 64"));
        assert!(error("http://a:1,places=x").contains("places must be"));
        assert!(error("http://a:1,gpus=2").contains("unknown key \"gpus\""));
        assert!(error("http://a:1,slots").contains("not KEY=VALUE"));
        assert!(error("http://a:1,slots=2,slots=3").contains("slots is given twice"));
        assert!(error("http://a:1,name=").contains("name \"\" must be"));
        assert!(error("http://a:1,name=a b").contains("must be"));
    }
}

/// Properties over arbitrary specs: [`parse_target`] never panics, reads back the
/// fields of a spec it is given, and accepts what it prints.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// A spec the way `--target` prints it back.
    fn printed(target: &TargetSpec) -> String {
        let mut spec = format!(
            "{},slots={},places={}",
            target.url, target.slots, target.places
        );
        if !target.name.is_empty() {
            spec.push_str(&format!(",name={}", target.name));
        }
        spec
    }

    fn url() -> impl Strategy<Value = String> {
        let host = prop_oneof![
            "[a-z][a-z0-9-]{0,10}(\\.[a-z]{1,5}){0,2}",
            (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
                .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
            Just("[::1]".to_string()),
        ];
        (
            prop::sample::select(vec!["http", "https", "HTTP"]),
            host,
            prop::option::of(1u16..),
            prop::sample::select(vec!["", "/", "/ollama", "//"]),
        )
            .prop_map(|(scheme, host, port, path)| {
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                format!("{scheme}://{host}{port}{path}")
            })
    }

    fn spec() -> impl Strategy<
        Value = (
            String,
            Option<String>,
            Option<usize>,
            Option<usize>,
            Vec<usize>,
        ),
    > {
        (
            prop_oneof![3 => url(), 1 => Just(SIM_URL.to_string())],
            prop::option::of("[A-Za-z0-9._:\\[\\]-]{1,64}"),
            prop::option::of(1..=MAX_SLOTS),
            prop::option::of(1..=MAX_PLACES),
            Just(vec![0usize, 1, 2]).prop_shuffle(),
        )
    }

    proptest! {
        #[test]
        fn any_text_is_a_target_or_a_message(text in any::<String>(), specish in "[a-z0-9:/.,= \\[\\]-]{0,40}") {
            for text in [text, specish] {
                if let Err(message) = parse_target(&text) {
                    prop_assert!(!message.is_empty());
                }
            }
        }

        #[test]
        fn a_spec_reads_back_its_fields_and_prints_what_it_parses(
            (url, name, slots, places, order) in spec(),
            space in "[ ]{0,2}",
        ) {
            let mut parts = Vec::new();
            for field in order {
                match field {
                    0 => parts.extend(name.as_ref().map(|n| format!("name={n}"))),
                    1 => parts.extend(slots.map(|n| format!("{space}slots{space}={space}{n}"))),
                    _ => parts.extend(places.map(|n| format!("places={n}{space}"))),
                }
            }
            let text = std::iter::once(format!("{space}{url}{space}")).chain(parts).collect::<Vec<_>>().join(",");
            let target = parse_target(&text).map_err(TestCaseError::fail)?;
            prop_assert_eq!(target.slots, slots.unwrap_or(1));
            prop_assert_eq!(target.places, places.unwrap_or(1));
            if let Some(name) = &name {
                prop_assert_eq!(&target.name, name);
            } else if url != SIM_URL {
                prop_assert!(!target.name.is_empty());
            }
            prop_assert!(!target.url.ends_with('/'));
            prop_assert_eq!(parse_target(&printed(&target)), Ok(target.clone()));
            prop_assert_eq!(parse_target(&target.url).map(|t| t.url), Ok(target.url));
        }
    }
}
