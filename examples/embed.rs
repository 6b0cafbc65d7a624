//! Embedding the quamba runtime in a Rust application: load a compiled artifact, stream a reply
//! token by token, and keep the conversation's state across calls.
//!
//! ```sh
//! cargo run --release --bin quambac -- compile --target cpu-w4a8 -o model.qmb
//! cargo run --release --example embed -- model.qmb
//! ```
//!
//! Only the `runtime` crate is needed to run an artifact (`quamba-runtime` in Cargo.toml).

use std::io::Write;
use std::path::PathBuf;

use runtime::model::Model;
use runtime::sampling::{Sampler, SamplingConfig};

fn main() -> anyhow::Result<()> {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: embed MODEL.qmb   (compile one with `quambac compile -o MODEL.qmb`)");
        std::process::exit(2);
    };
    // Opening checks everything (checksum, graph, weights, tokenizer) once.
    let model = Model::open(&path)?;
    eprintln!("loaded {} ({})", path.display(), model.target());

    // One state per conversation; one model can serve many conversations.
    let mut conversation = model.new_state();
    let mut sampler = Sampler::new(SamplingConfig { temperature: 0.8, top_p: 0.95, seed: 7 });
    let mut stdout = std::io::stdout().lock();

    for prompt in ["ROMEO:\n", "\n\nJULIET:\n"] {
        write!(stdout, "{prompt}")?;
        let mut lines = 0;
        // The callback sees each piece of text as soon as it is complete; returning false stops
        // generation early (here: after two lines).
        let reply = model.generate(&mut conversation, prompt, 64, &mut sampler, |piece| {
            lines += piece.matches('\n').count();
            write!(stdout, "{piece}").and_then(|_| stdout.flush()).is_ok() && lines < 2
        })?;
        eprintln!("[{} tokens; the state has now seen {} tokens]", reply.token_ids.len(), conversation.position);
    }
    Ok(())
}
