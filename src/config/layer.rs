//! The `settings!` macro, which turns the one list of settings in `mod.rs` into the resolved
//! [`Config`](super::Config) and the all-optional [`Layer`](super::Layer) that each source
//! (flags with their variables, the TOML file) fills.

/// From one list of settings, each written once as
///
/// ```text
/// /// Help text (the flag's `--help` and the field's doc).
/// #[arg(env = "TESSERA_NAME")]
/// name: Type = default;             // read and shown as `Type` says (its `Setting` impl)
/// name: Type as Kind = default;     // read and shown as the marker `Kind` says
/// ```
///
/// it makes:
/// - `Config`: the resolved settings, one public field each, and its `Default`;
/// - `Layer`: the same settings as `Option`s of their raw values, filled by clap (the flag
///   `--name`, or else the variable) and by the TOML file (the key `name`), whichever a
///   source gives; `Layer::or` merges two, `Layer::resolve` parses one over the defaults;
/// - `Debug` for `Config` and the lines of `tessera config`, each setting shown as its
///   `Setting` impl says (secrets redacted by their type).
///
/// The list's order is the order of `--help`, of `Debug` and of `tessera config`.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        #[arg($($arg:tt)*)]
        $name:ident: $ty:ty $(as $kind:ty)? = $default:expr;
    )*) => {
        /// Every setting of a running server, resolved.
        #[derive(Clone)]
        pub struct Config {
            $( $(#[doc = $doc])* pub $name: $ty, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $name: $default, )* }
            }
        }

        /// The settings one source gives (flags with their variables, or the file), each
        /// optional so that "not given" differs from "given the default".
        #[derive(clap::Args, serde::Deserialize, Clone, Default)]
        #[serde(default, deny_unknown_fields)]
        pub struct Layer {
            $(
                $(#[doc = $doc])*
                #[arg(long, global = true, $($arg)*)]
                $name: Option<<setting_kind!($ty $(, $kind)?) as $crate::config::setting::Setting>::Raw>,
            )*
        }

        impl Layer {
            /// Each setting from `self`, or else from `lower`.
            pub fn or(self, lower: Layer) -> Layer {
                Layer { $( $name: self.$name.or(lower.$name), )* }
            }

            /// The settings given here parsed, the others at their defaults (not validated).
            pub fn resolve(self) -> Result<Config, $crate::config::ConfigError> {
                use $crate::config::setting::Setting;
                let mut config = Config::default();
                $(
                    if let Some(raw) = self.$name {
                        config.$name = <setting_kind!($ty $(, $kind)?)>::parse(raw).map_err(
                            |message| $crate::config::ConfigError::Invalid {
                                name: stringify!($name),
                                message,
                            },
                        )?;
                    }
                )*
                Ok(config)
            }
        }

        impl std::fmt::Debug for Config {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                use $crate::config::setting::Shown;
                f.debug_struct("Config")
                    $(
                        .field(
                            stringify!($name),
                            &Shown::<setting_kind!($ty $(, $kind)?)>::new(&self.$name),
                        )
                    )*
                    .finish()
            }
        }

        impl Config {
            /// The settings' names (their TOML keys; `--` and `-` for `_` make the flag), in
            /// the list's order.
            pub const NAMES: &'static [&'static str] = &[ $( stringify!($name), )* ];

            /// Each setting's line in `tessera config`, in the list's order (`None`: no line).
            fn printed_lines(&self) -> Vec<Option<String>> {
                use $crate::config::setting::Setting;
                vec![ $( <setting_kind!($ty $(, $kind)?)>::print(stringify!($name), &self.$name), )* ]
            }
        }
    };
}

/// The type whose `Setting` impl reads and shows a setting: its marker if it has one, else its
/// own type.
macro_rules! setting_kind {
    ($ty:ty) => {
        $ty
    };
    ($ty:ty, $kind:ty) => {
        $kind
    };
}
