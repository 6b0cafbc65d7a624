//! The model's `tokenizer.json` (a Hugging Face tokenizer), loaded with the `tokenizers` crate.

use std::path::Path;

use crate::RuntimeError;

/// Text ↔ token ids.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: String,
}

impl Tokenizer {
    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Tokenizer, RuntimeError> {
        let shown = path.display().to_string();
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| RuntimeError::Tokenizer { path: shown.clone(), detail: e.to_string() })?;
        Ok(Tokenizer { inner, path: shown })
    }

    /// Loads a tokenizer from its JSON text (e.g. embedded in an artifact); `origin` names it in errors.
    pub fn from_json(json: &str, origin: &str) -> Result<Tokenizer, RuntimeError> {
        let inner = json.parse::<tokenizers::Tokenizer>().map_err(|e| RuntimeError::Tokenizer { path: origin.to_string(), detail: e.to_string() })?;
        Ok(Tokenizer { inner, path: origin.to_string() })
    }

    /// Token ids of `text`, without special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>, RuntimeError> {
        let enc = self.inner.encode(text, false).map_err(|e| self.err(e))?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// The text of `ids` (special tokens skipped).
    pub fn decode(&self, ids: &[i64]) -> Result<String, RuntimeError> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.inner.decode(&ids, true).map_err(|e| self.err(e))
    }

    fn err(&self, e: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Tokenizer { path: self.path.clone(), detail: e.to_string() }
    }
}
