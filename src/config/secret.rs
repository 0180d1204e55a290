//! A secret setting: its `Debug` and `Serialize` show `<redacted>`, never the value, so a
//! setting of this type cannot leak through a log line, `tessera config` or a serialised
//! config. The code that needs the value reads it through `Deref` (`&str`).

use std::fmt;
use std::ops::Deref;

use serde::{Serialize, Serializer};

use super::values::REDACTED;

/// A secret string (a webhook's HMAC key, a feed credential).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// As the placeholder: a config serialised with a secret in it reads back as a wrong secret,
/// never as the real one.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// No `Display`: `format!("{secret}")` does not compile. The value is there for the code that
/// uses it (`config.alert_webhook_secret.as_deref()`).
impl Deref for Secret {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Secret {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}
