//! Autoregressive generation: prefill the prompt in one call, then one recurrent decode step per
//! new token, streaming each token to a callback as soon as it is chosen.

use crate::sampling::Sampler;
use crate::{Executor, RuntimeError, State};

/// Generates up to `max_new` tokens after `prompt` for one sequence, continuing from `state`
/// (pass a fresh state to start a new conversation). `on_token` sees each new id and can stop
/// generation by returning `false`. Returns the new ids.
pub fn generate(
    exec: &Executor,
    state: &mut State,
    prompt: &[i64],
    max_new: usize,
    allowed_vocab: usize,
    sampler: &mut Sampler,
    mut on_token: impl FnMut(i64) -> bool,
) -> Result<Vec<i64>, RuntimeError> {
    if state.batch() != 1 {
        return Err(RuntimeError::Input(format!("generation runs one sequence, the state holds {}", state.batch())));
    }
    if prompt.is_empty() {
        return Err(RuntimeError::Input("the prompt has no tokens".into()));
    }
    let mut out = Vec::with_capacity(max_new);
    let mut logits = exec.forward(state, prompt)?;
    for _ in 0..max_new {
        let next = sampler.sample(logits.row(0, logits.seq - 1), allowed_vocab);
        out.push(next);
        if !on_token(next) {
            break;
        }
        logits = exec.forward(state, &[next])?;
    }
    Ok(out)
}
