//! How a config key is defined once: `section!` declares a section's struct from its keys (doc
//! comment, type, default, checks) and derives from that its `Default`, its validation and its rows
//! of the key table ([`Key`]), from which `generate-config` and docs/config.md are written.
//!
//! A check is a function of the section and the key's value that returns the problem, like
//! [`seconds`] or a closure; cross-key checks (`reconnect_max_s` against `reconnect_min_s`) are
//! attached to one of the keys. Checks run in declaration order; the first problem is reported.

use serde::Serialize;

use super::MAX_SECONDS;

/// One row of the key table: a section's header or a key.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    /// The full dotted name (`flow.udp_timeout_s`); a section's own name (`flow`, or "" for the
    /// top level).
    pub name: &'static str,
    /// The doc comment, one entry per line.
    pub doc: &'static [&'static str],
    /// Whether this row is a section's header rather than a key.
    pub section: bool,
    /// The default as TOML; None for a section and for an `Option` key unset by default.
    pub default: Option<String>,
    /// For an `Option` key unset by default: a value to show, commented out.
    pub example: Option<String>,
}

impl Key {
    /// The name within its section (`udp_timeout_s`).
    pub fn short_name(&self) -> &'static str {
        self.name.rsplit('.').next().unwrap_or(self.name)
    }

    /// The unit, read from the name's suffix (see STYLE.md: units in names).
    pub fn unit(&self) -> Option<&'static str> {
        let units = [
            ("_per_min", "per minute"),
            ("_per_s", "per second"),
            ("_s", "seconds"),
            ("_kib", "KiB"),
            ("_mb", "MB"),
        ];
        if self.section {
            return None;
        }
        let unit = units.iter().find(|(suffix, _)| self.name.ends_with(suffix));
        unit.map(|(_, unit)| *unit)
    }

    /// The doc comment as one paragraph.
    pub fn doc_text(&self) -> String {
        let lines = self.doc.iter().map(|l| l.trim());
        lines
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A value a config key can hold, or a whole section (so that the root config is declared with
/// `section!` like its sections).
pub trait Setting {
    /// Appends this setting's rows to `keys`: a value fills in `key`'s default; a section adds
    /// its header and its keys.
    fn add_keys(&self, key: Key, keys: &mut Vec<Key>);

    /// A section checks its keys; a value has nothing more to check.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        Ok(())
    }
}

/// A value as TOML (`30.0`, `"edgewatch/v1"`, `[]`); None for an unset `Option`.
pub fn toml_text<T: Serialize + ?Sized>(value: &T) -> Option<String> {
    toml::Value::try_from(value).ok().map(|v| v.to_string())
}

macro_rules! value_settings {
    ($($t:ty),* $(,)?) => {
        $(impl $crate::config::spec::Setting for $t {
            fn add_keys(
                &self,
                key: $crate::config::spec::Key,
                keys: &mut Vec<$crate::config::spec::Key>,
            ) {
                let default = $crate::config::spec::toml_text(self);
                keys.push($crate::config::spec::Key { default, ..key });
            }
        })*
    };
}

value_settings! { bool, u8, u16, u32, u64, usize, f64, String, Vec<String>, Option<f32> }

/// Runs one check of a key; `check` is a rule below or a closure `|section, value| ...`.
pub fn check<S, T: ?Sized>(
    section: &S,
    value: &T,
    check: impl Fn(&S, &T) -> Result<(), String>,
) -> Result<(), String> {
    check(section, value)
}

/// Ok when `ok`, else the problem.
pub fn require(ok: bool, problem: impl Into<String>) -> Result<(), String> {
    if ok { Ok(()) } else { Err(problem.into()) }
}

/// A span of time in seconds: positive, and at most a year (a `Duration` must hold it).
pub fn seconds<S>(_: &S, &value: &f64) -> Result<(), String> {
    if value.is_finite() && value > 0.0 && value <= MAX_SECONDS {
        return Ok(());
    }
    Err(format!(
        "must be a positive number of seconds up to {MAX_SECONDS} (a year), not {value}"
    ))
}

/// A positive finite number (a rate, a size).
pub fn positive<S>(_: &S, &value: &f64) -> Result<(), String> {
    if value.is_finite() && value > 0.0 {
        return Ok(());
    }
    Err(format!("must be a positive number, not {value}"))
}

/// A count from `min` to `max`.
pub fn count<S, T: Copy + TryInto<u64>>(
    min: u64,
    max: u64,
) -> impl Fn(&S, &T) -> Result<(), String> {
    move |_, &value| {
        let value = value.try_into().unwrap_or(u64::MAX);
        if value < min {
            Err(format!("must be at least {min}"))
        } else if value > max {
            Err(format!("must be at most {max}, not {value}"))
        } else {
            Ok(())
        }
    }
}

/// A count of at least `min`.
pub fn at_least<S, T: Copy + TryInto<u64>>(min: u64) -> impl Fn(&S, &T) -> Result<(), String> {
    count(min, u64::MAX)
}

/// A count from `min` to `max`; unlike [`count`], the problem names both bounds.
pub fn between<S, T: Copy + TryInto<u64>>(
    min: u64,
    max: u64,
) -> impl Fn(&S, &T) -> Result<(), String> {
    move |_, &value| {
        let value = value.try_into().unwrap_or(u64::MAX);
        if (min..=max).contains(&value) {
            return Ok(());
        }
        Err(format!("must be between {min} and {max}, not {value}"))
    }
}

/// `Some(example)` as TOML, or None when the key has no example.
macro_rules! example {
    () => {
        None
    };
    ($example:expr) => {
        $crate::config::spec::toml_text(&$example)
    };
}

/// Declares a config section: the struct (serde with `deny_unknown_fields` and `default`), its
/// `Default`, `validate` (the faulty key's full name and the problem) and its rows of the key
/// table. Each key reads
///
/// ```text
/// /// Doc comment: what the key does (printed by generate-config, listed in docs/config.md).
/// name: Type = default [, example VALUE] [=> check, check...];
/// ```
///
/// where `example` is a value to show commented out for an `Option` key unset by default. A
/// section field (of a type declared with this macro) checks and lists its own keys.
macro_rules! section {
    (
        $(#[doc = $section_doc:literal])*
        pub struct $name:ident $(in $prefix:literal)? { $($keys:tt)* }
    ) => {
        // The root has no prefix: "" then stands for it, so that `$prefix` is one literal below.
        section!(@ [$($section_doc)*] $name [$($prefix)? ""] { $($keys)* });
    };
    (
        @ [$($section_doc:literal)*] $name:ident [$prefix:literal $($_root:literal)?] {
            $(
                $(#[doc = $doc:literal])*
                $field:ident: $ty:ty = $default:expr $(, example $example:expr)?
                    $(=> $($check:expr),+)?;
            )*
        }
    ) => {
        $(#[doc = $section_doc])*
        #[derive(Clone, Debug, serde::Deserialize, PartialEq)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $($(#[doc = $doc])* pub $field: $ty,)*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $($field: $default,)* }
            }
        }

        impl $name {
            /// Checks the section's keys in order; returns the first faulty key (its full name)
            /// and what is wrong with it.
            pub fn validate(&self) -> Result<(), (&'static str, String)> {
                use $crate::config::spec::{Setting, check};
                $(
                    $($(
                        check(self, &self.$field, $check)
                            .map_err(|problem| (concat!($prefix, stringify!($field)), problem))?;
                    )+)?
                    Setting::validate(&self.$field)?;
                )*
                Ok(())
            }
        }

        impl $crate::config::spec::Setting for $name {
            fn add_keys(
                &self,
                _: $crate::config::spec::Key,
                keys: &mut Vec<$crate::config::spec::Key>,
            ) {
                use $crate::config::spec::Key;
                keys.push(Key {
                    name: $prefix.trim_end_matches('.'),
                    doc: &[$($section_doc),*],
                    section: true,
                    default: None,
                    example: None,
                });
                $(
                    let key = Key {
                        name: concat!($prefix, stringify!($field)),
                        doc: &[$($doc),*],
                        section: false,
                        default: None,
                        example: $crate::config::spec::example!($($example)?),
                    };
                    $crate::config::spec::Setting::add_keys(&self.$field, key, keys);
                )*
            }

            fn validate(&self) -> Result<(), (&'static str, String)> {
                $name::validate(self)
            }
        }
    };
}

pub(crate) use {example, section, value_settings};
