//! A compiled model to embed in an application: open a `.qmb` artifact, then generate text with
//! a streaming callback, continuing a conversation by passing the same [`State`] again.
//!
//! ```no_run
//! use runtime::model::Model;
//! use runtime::sampling::{Sampler, SamplingConfig};
//!
//! let model = Model::open("model.qmb".as_ref())?;
//! let mut state = model.new_state();
//! let mut sampler = Sampler::new(SamplingConfig::default());
//! let reply = model.generate(&mut state, "ROMEO:", 32, &mut sampler, |piece| {
//!     print!("{piece}");
//!     true // false stops generation
//! })?;
//! println!("\n{} tokens", reply.token_ids.len());
//! # Ok::<(), runtime::model::ModelError>(())
//! ```
//!
//! Everything is checked when the artifact is opened (checksum, graph verification, weights
//! against the graph, tokenizer), so generation only fails on bad input (an empty prompt).

use std::path::{Path, PathBuf};

use ir::VerifiedGraph;
use serde::Deserialize;

use crate::artifact::{read_artifact, ArtifactError};
use crate::generate::generate;
use crate::sampling::Sampler;
use crate::tokenizer::Tokenizer;
use crate::{Executor, RuntimeError, State};

/// Why a model could not be opened or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The artifact could not be read (I/O, magic, version, checksum, corrupt content).
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// The artifact passed its checks but cannot be run: no tokenizer, a graph that fails
    /// verification (a compiler bug or a crafted file).
    #[error("{}: {detail}", path.display())]
    Unusable {
        /// The artifact.
        path: PathBuf,
        /// What is missing or wrong.
        detail: String,
    },
    /// Tokenization or execution failed (an empty prompt, a tokenizer error).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// What one [`Model::generate`] call produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    /// The new token ids, in order.
    pub token_ids: Vec<i64>,
    /// Their text (as streamed).
    pub text: String,
}

/// The part of the compiler's model description (`model_config_json`, written by
/// `compiler::artifact::ModelInfo`) that running needs; other fields are ignored.
#[derive(Deserialize)]
struct EmbeddedInfo {
    config: EmbeddedConfig,
    tokenizer_json: Option<String>,
}

#[derive(Deserialize)]
struct EmbeddedConfig {
    /// Real vocabulary size; embedding rows past it are padding and never sampled.
    vocab_size: usize,
}

// What the doc below promises: one model shared by threads.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Model>();
};

/// A loaded artifact: executor, tokenizer and vocabulary. Immutable and `Sync`, so one model
/// can serve many conversations (one [`State`] each) from several threads.
pub struct Model {
    executor: Executor,
    tokenizer: Tokenizer,
    vocab_size: usize,
    target: String,
}

impl Model {
    /// Opens and fully checks the artifact at `path`.
    pub fn open(path: &Path) -> Result<Model, ModelError> {
        let art = read_artifact(path, None)?;
        let unusable = |detail: String| ModelError::Unusable { path: path.to_path_buf(), detail };
        let info: EmbeddedInfo = serde_json::from_str(&art.header.model_config_json).map_err(|e| unusable(format!("model description: {e}")))?;
        let json = info.tokenizer_json.ok_or_else(|| unusable("the artifact embeds no tokenizer (compile it from a directory with tokenizer.json)".into()))?;
        let tokenizer = Tokenizer::from_json(&json, &path.display().to_string())?;
        let graph = VerifiedGraph::new(art.graph).map_err(|e| unusable(format!("the graph fails verification: {e}")))?;
        let executor = Executor::new(graph, art.weights)?;
        Ok(Model { executor, tokenizer, vocab_size: info.config.vocab_size, target: art.header.target })
    }

    /// A fresh conversation: no tokens seen.
    pub fn new_state(&self) -> State {
        self.executor.new_state(1)
    }

    /// The target the artifact was compiled for (e.g. `cpu-w4a8`).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The executor, for token-level use (logits, perplexity).
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Feeds `prompt` after whatever `state` has seen, then generates up to `max_tokens` tokens,
    /// calling `on_text` with each new piece of text as soon as it is complete (a character
    /// split across tokens is held back until its last byte arrives). `on_text` returns `false`
    /// to stop. Returns the generated token ids and text.
    ///
    /// Afterwards `state` has seen the prompt and every generated token except, when `on_text`
    /// stopped generation, the last one; pass it again to continue the conversation.
    pub fn generate(&self, state: &mut State, prompt: &str, max_tokens: usize, sampler: &mut Sampler, mut on_text: impl FnMut(&str) -> bool) -> Result<Generated, ModelError> {
        let ids = self.tokenizer.encode(prompt)?;
        if ids.is_empty() {
            return Err(RuntimeError::Input("the prompt encodes to no tokens".into()).into());
        }
        let mut generated = Vec::new();
        let mut text = String::new();
        let mut decode_error = None;
        let token_ids = generate(&self.executor, state, &ids, max_tokens, self.vocab_size, sampler, |id| {
            generated.push(id);
            // Decode the growing suffix: byte-level tokens may split a UTF-8 character.
            match self.tokenizer.decode(&generated) {
                Ok(now) if now.len() > text.len() && !now.ends_with('\u{FFFD}') && now.starts_with(text.as_str()) => {
                    let piece = now[text.len()..].to_string();
                    text = now;
                    on_text(&piece)
                }
                Ok(_) => true,
                Err(e) => {
                    decode_error = Some(e);
                    false
                }
            }
        })?;
        match decode_error {
            Some(e) => Err(e.into()),
            None => Ok(Generated { token_ids, text }),
        }
    }
}
