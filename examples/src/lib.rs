//! The pieces of the `chat` example that are worth testing on their own: argument parsing,
//! command parsing, and errors in plain words.

use storycad_client::Error;

/// The REPL's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// The Worker's base URL, ending in `/v1`.
    pub base_url: String,
    /// The JWT to send.
    pub token: String,
    /// The model alias; the first one the Worker lists when absent.
    pub model: Option<String>,
    /// An optional system message.
    pub system: Option<String>,
}

const USAGE: &str = "usage: chat --base-url URL [--token JWT] [--model ALIAS] [--system TEXT]
  the token may come from STORYCAD_TOKEN, the URL from STORYCAD_BASE_URL,
  the model from STORYCAD_MODEL";

impl Args {
    /// Parses the command line, falling back on environment variables read through `env`.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Args, String> {
        let (mut base_url, mut token, mut model, mut system) = (None, None, None, None);
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let slot = match name.as_str() {
                "--base-url" => &mut base_url,
                "--token" => &mut token,
                "--model" => &mut model,
                "--system" => &mut system,
                "-h" | "--help" => return Err(USAGE.to_owned()),
                other => return Err(format!("unknown argument {other}\n{USAGE}")),
            };
            let value = match inline.or_else(|| args.next()) {
                Some(v) => v,
                None => return Err(format!("{name} needs a value\n{USAGE}")),
            };
            *slot = Some(value);
        }
        let base_url = base_url
            .or_else(|| env("STORYCAD_BASE_URL"))
            .ok_or_else(|| format!("no base URL: pass --base-url\n{USAGE}"))?;
        let token = token
            .or_else(|| env("STORYCAD_TOKEN"))
            .ok_or_else(|| format!("no token: pass --token or set STORYCAD_TOKEN\n{USAGE}"))?;
        Ok(Args {
            base_url,
            token,
            model: model.or_else(|| env("STORYCAD_MODEL")),
            system,
        })
    }
}

/// One line typed at the prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// A blank line.
    Empty,
    /// `/quit` or `/exit`.
    Quit,
    /// `/help`.
    Help,
    /// `/reset`: forget the conversation (the system message stays).
    Reset,
    /// `/model` shows the model; `/model NAME` switches to it.
    Model(Option<String>),
    /// `/models`: list what the plan allows.
    Models,
    /// `/usage`: the plan's limits and what is left.
    Usage,
    /// A `/word` that is not a command.
    Unknown(String),
    /// Text to send.
    Say(String),
}

impl Command {
    /// Parses a line.
    pub fn parse(line: &str) -> Command {
        let line = line.trim();
        if line.is_empty() {
            return Command::Empty;
        }
        let Some(rest) = line.strip_prefix('/') else {
            return Command::Say(line.to_owned());
        };
        let (word, arg) = match rest.split_once(char::is_whitespace) {
            Some((w, a)) => (w, Some(a.trim().to_owned()).filter(|a| !a.is_empty())),
            None => (rest, None),
        };
        match word {
            "quit" | "exit" | "q" => Command::Quit,
            "help" | "?" => Command::Help,
            "reset" | "clear" => Command::Reset,
            "model" => Command::Model(arg),
            "models" => Command::Models,
            "usage" => Command::Usage,
            _ => Command::Unknown(format!("/{word}")),
        }
    }
}

/// An error in plain words for a person at the prompt.
pub fn describe_error(e: &Error) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_win_over_environment() {
        let a = Args::parse(
            args(&["--base-url", "http://h/v1", "--token=t1", "--model", "m"]),
            env(&[("STORYCAD_TOKEN", "t2"), ("STORYCAD_MODEL", "m2")]),
        )
        .unwrap();
        assert_eq!(a.base_url, "http://h/v1");
        assert_eq!(a.token, "t1");
        assert_eq!(a.model.as_deref(), Some("m"));
    }

    #[test]
    fn token_from_environment() {
        let a = Args::parse(args(&["--base-url", "u"]), env(&[("STORYCAD_TOKEN", "t")])).unwrap();
        assert_eq!(a.token, "t");
        assert_eq!(a.model, None);
    }

    #[test]
    fn missing_token_or_value_is_explained() {
        let e = Args::parse(args(&["--base-url", "u"]), env(&[])).unwrap_err();
        assert!(e.contains("no token"), "{e}");
        let e = Args::parse(args(&["--base-url"]), env(&[])).unwrap_err();
        assert!(e.contains("needs a value"), "{e}");
        let e = Args::parse(args(&["--bogus"]), env(&[])).unwrap_err();
        assert!(e.contains("unknown argument --bogus"), "{e}");
    }

    #[test]
    fn commands_parse() {
        assert_eq!(Command::parse("  "), Command::Empty);
        assert_eq!(Command::parse("/quit"), Command::Quit);
        assert_eq!(Command::parse("/model"), Command::Model(None));
        assert_eq!(
            Command::parse("/model  fast "),
            Command::Model(Some("fast".into()))
        );
        assert_eq!(Command::parse("/usage"), Command::Usage);
        assert_eq!(Command::parse("/nope x"), Command::Unknown("/nope".into()));
        assert_eq!(
            Command::parse(" hello /there "),
            Command::Say("hello /there".into())
        );
    }
}

/// The repository README's Rust examples, compiled as doctests so they stay true. Here rather
/// than in `storycad-client`, whose published package cannot reach the repository's README.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
