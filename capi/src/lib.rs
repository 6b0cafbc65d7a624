//! libquamba: the C ABI of the quamba runtime. The contract of every function (ownership,
//! errors, threads) is written once, in `include/quamba.h`; this file implements it.
//!
//! No panic may unwind into C: every entry point runs its body under `catch_unwind` and turns
//! a panic, like any error, into a return value plus a message in the caller's buffer.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::ptr;

use runtime::model::Model;
use runtime::sampling::{Sampler, SamplingConfig};
use runtime::State;

/// `quamba_model` in C: a model and one conversation.
pub struct QuambaModel {
    model: Model,
    state: State,
    sampler: Sampler,
}

/// `quamba_text_callback` in C.
pub type QuambaTextCallback = unsafe extern "C" fn(text: *const c_char, len: usize, user_data: *mut c_void) -> c_int;

/// Runs `body`, turning a panic into an error message.
fn guarded<T>(body: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| Err("internal error: libquamba panicked (a bug, please report it)".to_string()))
}

/// Copies `msg` into the caller's buffer, cut at a character boundary so that it and its NUL fit.
///
/// # Safety
/// `err` is NULL or points to `err_len` writable bytes.
unsafe fn write_error(err: *mut c_char, err_len: usize, msg: &str) {
    if err.is_null() || err_len == 0 {
        return;
    }
    let mut n = msg.len().min(err_len - 1);
    while !msg.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: `err` points to `err_len` writable bytes (this function's contract) and we write
    // `n + 1 <= err_len` of them; `msg` is a Rust string, so the two regions do not overlap.
    unsafe {
        ptr::copy_nonoverlapping(msg.as_ptr(), err.cast::<u8>(), n);
        *err.add(n) = 0;
    }
}

/// A C string argument as UTF-8.
///
/// # Safety
/// `arg` is NULL or a NUL-terminated string that stays valid for `'a`.
unsafe fn utf8_arg<'a>(arg: *const c_char, name: &str) -> Result<&'a str, String> {
    if arg.is_null() {
        return Err(format!("{name} is NULL"));
    }
    // SAFETY: non-null, and NUL-terminated and alive for `'a` by this function's contract.
    let c = unsafe { CStr::from_ptr(arg) };
    c.to_str().map_err(|e| format!("{name} is not valid UTF-8 (byte {})", e.valid_up_to()))
}

/// The handle behind `model`.
///
/// # Safety
/// `model` is NULL or a live handle from [`quamba_load`] that no other thread is using.
unsafe fn handle<'a>(model: *mut QuambaModel) -> Result<&'a mut QuambaModel, String> {
    // SAFETY: by this function's contract the pointer is NULL (-> None) or a live, unshared
    // `Box<QuambaModel>` allocation.
    unsafe { model.as_mut() }.ok_or_else(|| "model is NULL".to_string())
}

/// Opens an artifact. See `quamba_load` in `include/quamba.h`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `err` is NULL or points to `err_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn quamba_load(path: *const c_char, err: *mut c_char, err_len: usize) -> *mut QuambaModel {
    let opened = guarded(|| {
        // SAFETY: forwarded from this function's contract.
        let path = unsafe { utf8_arg(path, "path") }?;
        let model = Model::open(Path::new(path)).map_err(|e| e.to_string())?;
        let state = model.new_state();
        Ok(QuambaModel { model, state, sampler: Sampler::new(SamplingConfig::default()) })
    });
    match opened {
        Ok(m) => Box::into_raw(Box::new(m)),
        Err(msg) => {
            // SAFETY: forwarded from this function's contract.
            unsafe { write_error(err, err_len, &msg) };
            ptr::null_mut()
        }
    }
}

/// Generates text. See `quamba_generate` in `include/quamba.h`.
///
/// # Safety
/// `model` is NULL or a live handle not in use by another thread; `prompt` is NULL or a
/// NUL-terminated string; `callback`, if not NULL, is safe to call with `user_data`; `err` is
/// NULL or points to `err_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn quamba_generate(
    model: *mut QuambaModel,
    prompt: *const c_char,
    max_tokens: usize,
    callback: Option<QuambaTextCallback>,
    user_data: *mut c_void,
    err: *mut c_char,
    err_len: usize,
) -> i64 {
    let generated = guarded(|| {
        // SAFETY: forwarded from this function's contract.
        let m = unsafe { handle(model) }?;
        // SAFETY: forwarded from this function's contract.
        let prompt = unsafe { utf8_arg(prompt, "prompt") }?;
        let mut piece_with_nul = Vec::new();
        let reply = m
            .model
            .generate(&mut m.state, prompt, max_tokens, &mut m.sampler, |piece| {
                let Some(cb) = callback else { return true };
                piece_with_nul.clear();
                piece_with_nul.extend_from_slice(piece.as_bytes());
                piece_with_nul.push(0);
                // SAFETY: the caller vouches for `cb` and `user_data`; the text pointer is valid
                // for `piece.len() + 1` bytes (NUL included) for the duration of the call.
                unsafe { cb(piece_with_nul.as_ptr().cast(), piece.len(), user_data) != 0 }
            })
            .map_err(|e| e.to_string())?;
        Ok(reply.token_ids.len() as i64)
    });
    generated.unwrap_or_else(|msg| {
        // SAFETY: forwarded from this function's contract.
        unsafe { write_error(err, err_len, &msg) };
        -1
    })
}

/// Sets the sampling of later generations. See `quamba_set_sampling` in `include/quamba.h`.
///
/// # Safety
/// `model` is NULL or a live handle not in use by another thread; `err` is NULL or points to
/// `err_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn quamba_set_sampling(model: *mut QuambaModel, temperature: f32, top_p: f32, seed: u64, err: *mut c_char, err_len: usize) -> c_int {
    let set = guarded(|| {
        // SAFETY: forwarded from this function's contract.
        let m = unsafe { handle(model) }?;
        if !temperature.is_finite() || temperature < 0.0 {
            return Err(format!("temperature must be a non-negative number, got {temperature}"));
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {top_p}"));
        }
        m.sampler = Sampler::new(SamplingConfig { temperature, top_p, seed });
        Ok(())
    });
    match set {
        Ok(()) => 0,
        Err(msg) => {
            // SAFETY: forwarded from this function's contract.
            unsafe { write_error(err, err_len, &msg) };
            -1
        }
    }
}

/// Forgets the conversation. See `quamba_reset` in `include/quamba.h`.
///
/// # Safety
/// `model` is NULL or a live handle not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn quamba_reset(model: *mut QuambaModel) {
    // A panic here could only come from allocation failure, which aborts anyway.
    // SAFETY: forwarded from this function's contract.
    if let Ok(m) = unsafe { handle(model) } {
        m.state = m.model.new_state();
    }
}

/// Frees a handle. See `quamba_free` in `include/quamba.h`.
///
/// # Safety
/// `model` is NULL or a live handle from [`quamba_load`], not used again afterwards.
#[no_mangle]
pub unsafe extern "C" fn quamba_free(model: *mut QuambaModel) {
    if !model.is_null() {
        // SAFETY: a live handle is a `Box` leaked by `quamba_load`, freed exactly once (contract).
        drop(unsafe { Box::from_raw(model) });
    }
}
