//! The fake provider on its own, for manual runs: prints its address and serves until it is
//! stopped (Ctrl-C, or a signal).
//!
//! `cargo run -p storycad-e2e --bin fake-provider -- [--port N] [--openai-key K] [--anthropic-key K]`

use storycad_e2e::fake_provider::{FakeProvider, FakeProviderOptions};

fn main() {
    let mut opts = FakeProviderOptions {
        log: true,
        ..FakeProviderOptions::default()
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next();
        match (arg.as_str(), value) {
            ("--port", Some(v)) => match v.parse() {
                Ok(p) => opts.port = p,
                Err(_) => fail(&format!("bad port {v}")),
            },
            ("--openai-key", Some(v)) => opts.openai_key = Some(v),
            ("--anthropic-key", Some(v)) => opts.anthropic_key = Some(v),
            _ => fail(&format!("unknown argument {arg}")),
        }
    }
    let provider = match FakeProvider::start_with(opts) {
        Ok(p) => p,
        Err(e) => fail(&format!("could not start: {e}")),
    };
    println!("{}", provider.addr());
    println!("OPENAI_BASE_URL={}", provider.openai_base_url());
    println!("ANTHROPIC_BASE_URL={}", provider.anthropic_base_url());
    // Serve until a signal ends the process (the kernel closes the sockets).
    let _provider = provider;
    loop {
        std::thread::park();
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("fake-provider: {msg}\nusage: fake-provider [--port N] [--openai-key K] [--anthropic-key K]");
    std::process::exit(2);
}
