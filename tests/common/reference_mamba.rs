//! A deliberately plain reference implementation of the Mamba1 and Mamba2 forward passes, for
//! checking the optimised executor. Everything is explicit loops over f32 tensors; dot products,
//! the SSM recurrence state and the nonlinearities are evaluated in f64, and activations are
//! rounded back to f32 between operations.
//!
//! Semantics follow mamba_ssm (transformers agrees for `n_groups = 1`):
//!
//! * block: `residual += mixer(RMSNorm(residual) * norm.weight)`; then `norm_f` and the lm head
//!   (the embedding matrix when tied).
//! * Mamba1 mixer: in_proj → (x, z); x = silu(causal depthwise conv(x) + bias); x_proj → (dt_low,
//!   B, C); dt = softplus(dt_proj(dt_low) + bias); A = −exp(A_log);
//!   `h[d,n] = exp(dt[d]·A[d,n])·h[d,n] + dt[d]·B[n]·x[d]`, `y[d] = Σₙ C[n]·h[d,n] + D[d]·x[d]`;
//!   `y *= silu(z)`; out_proj.
//! * Mamba2 mixer: in_proj → (z, xBC, dt); xBC = silu(conv(xBC) + bias) → (x, B, C);
//!   dt = clamp(softplus(dt + dt_bias), dt_limit); head h reads group `h / (nheads / ngroups)`;
//!   `S[h,p,n] = exp(dt[h]·A[h])·S[h,p,n] + dt[h]·x[h,p]·B[g,n]`,
//!   `y[h,p] = Σₙ S[h,p,n]·C[g,n] + D[h]·x[h,p]`; gated RMSNorm `rms_g(y·silu(z)) · norm.weight`
//!   over each of the `ngroups` contiguous slices of d_inner; out_proj.
//!
//! Three evaluation orders are provided, which must agree:
//! * [`RefModel::logits`]: layer by layer over the whole sequence, causal conv with explicit left
//!   zero padding, then the recurrence token by token;
//! * [`RefModel::step`] / [`RefModel::prefill`]: token by token through all layers, carrying the
//!   conv window and SSM state in a [`RefState`] (bit-identical to `logits`);
//! * [`RefModel::logits_quadratic`]: like `logits`, but the SSM is evaluated in its quadratic
//!   ("attention") form `y_t = Σ_{s≤t} (C_t·B_s)·exp(A·Σ_{r=s+1..t} dt_r)·dt_s·x_s + D·x_t`, the dual
//!   that chunked SSD implementations are built on (agrees to rounding).

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// Which mixer the blocks use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefFamily {
    Mamba1,
    Mamba2,
}

/// Architecture hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct RefConfig {
    pub family: RefFamily,
    pub d_model: usize,
    pub n_layer: usize,
    pub vocab: usize,
    pub d_state: usize,
    pub d_conv: usize,
    /// d_inner = expand · d_model.
    pub expand: usize,
    /// Mamba1 only (0 for Mamba2).
    pub dt_rank: usize,
    /// Mamba2 only (0 for Mamba1).
    pub head_dim: usize,
    /// Mamba2 only (0 for Mamba1).
    pub ngroups: usize,
    pub eps: f32,
    /// lm head = embedding matrix.
    pub tied: bool,
    /// Mamba2: dt is clamped to `[lo, hi]` after the softplus.
    pub dt_limit: (f32, f32),
    /// in_proj / out_proj carry biases.
    pub use_bias: bool,
    /// conv1d carries a bias.
    pub use_conv_bias: bool,
}

impl RefConfig {
    pub fn d_inner(&self) -> usize {
        self.expand * self.d_model
    }

    /// Mamba2: number of heads (0 for Mamba1).
    pub fn nheads(&self) -> usize {
        match self.family {
            RefFamily::Mamba1 => 0,
            RefFamily::Mamba2 => self.d_inner() / self.head_dim,
        }
    }

    /// Channels that go through the causal conv.
    pub fn conv_dim(&self) -> usize {
        match self.family {
            RefFamily::Mamba1 => self.d_inner(),
            RefFamily::Mamba2 => self.d_inner() + 2 * self.ngroups * self.d_state,
        }
    }

    /// Rows of in_proj.weight.
    pub fn in_proj_dim(&self) -> usize {
        match self.family {
            RefFamily::Mamba1 => 2 * self.d_inner(),
            RefFamily::Mamba2 => self.d_inner() + self.conv_dim() + self.nheads(),
        }
    }

    /// Elements of one layer's SSM state.
    pub fn ssm_state_len(&self) -> usize {
        match self.family {
            RefFamily::Mamba1 => self.d_inner() * self.d_state,
            RefFamily::Mamba2 => self.nheads() * self.head_dim * self.d_state,
        }
    }

    /// Reads a transformers `config.json` (`model_type` "mamba" or "mamba2").
    pub fn from_json(v: &Value) -> RefConfig {
        let family = match v.get("model_type").and_then(Value::as_str) {
            Some("mamba") => RefFamily::Mamba1,
            Some("mamba2") => RefFamily::Mamba2,
            other => panic!("config.json: unsupported model_type {other:?}"),
        };
        let int = |key: &str, default: Option<usize>| -> usize {
            match v.get(key) {
                None | Some(Value::Null) => default.unwrap_or_else(|| panic!("config.json: missing `{key}`")),
                Some(x) => x.as_u64().unwrap_or_else(|| panic!("config.json: `{key}` is not an integer: {x}")) as usize,
            }
        };
        let boolean = |key: &str, default: bool| -> bool {
            match v.get(key) {
                None | Some(Value::Null) => default,
                Some(x) => x.as_bool().unwrap_or_else(|| panic!("config.json: `{key}` is not a bool: {x}")),
            }
        };
        let d_model = int("hidden_size", None);
        let expand = int("expand", Some(2));
        let d_inner = expand * d_model;
        let eps = match v.get("layer_norm_epsilon") {
            None | Some(Value::Null) => 1e-5,
            Some(x) => json_float(x) as f32,
        };
        let mut cfg = RefConfig {
            family,
            d_model,
            n_layer: int("num_hidden_layers", None),
            vocab: int("vocab_size", None),
            d_state: int("state_size", Some(if family == RefFamily::Mamba1 { 16 } else { 128 })),
            d_conv: int("conv_kernel", Some(4)),
            expand,
            dt_rank: 0,
            head_dim: 0,
            ngroups: 0,
            eps,
            tied: boolean("tie_word_embeddings", true),
            dt_limit: (0.0, f32::INFINITY),
            use_bias: boolean("use_bias", false),
            use_conv_bias: boolean("use_conv_bias", true),
        };
        match family {
            RefFamily::Mamba1 => {
                if let Some(n) = v.get("intermediate_size").and_then(Value::as_u64) {
                    assert_eq!(n as usize, d_inner, "config.json: intermediate_size ≠ expand · hidden_size");
                }
                cfg.dt_rank = match v.get("time_step_rank") {
                    None | Some(Value::Null) => d_model.div_ceil(16),
                    Some(Value::String(s)) if s == "auto" => d_model.div_ceil(16),
                    Some(x) => x.as_u64().unwrap_or_else(|| panic!("config.json: bad time_step_rank {x}")) as usize,
                };
            }
            RefFamily::Mamba2 => {
                cfg.head_dim = int("head_dim", Some(64));
                cfg.ngroups = int("n_groups", Some(1));
                assert!(d_inner % cfg.head_dim == 0, "d_inner {d_inner} not a multiple of head_dim {}", cfg.head_dim);
                let nheads = d_inner / cfg.head_dim;
                assert_eq!(int("num_heads", Some(nheads)), nheads, "config.json: num_heads ≠ d_inner / head_dim");
                assert!(nheads.is_multiple_of(cfg.ngroups), "nheads {nheads} not a multiple of ngroups {}", cfg.ngroups);
                if let Some(Value::Array(a)) = v.get("time_step_limit") {
                    assert_eq!(a.len(), 2, "config.json: time_step_limit must have two entries");
                    cfg.dt_limit = (json_float(&a[0]) as f32, json_float(&a[1]) as f32);
                }
            }
        }
        cfg
    }
}

/// A JSON number, or PyTorch's `{"__float__": "Infinity"}` spelling of a non-finite float.
fn json_float(v: &Value) -> f64 {
    let from_str = |s: &str| -> f64 {
        match s {
            "Infinity" | "inf" => f64::INFINITY,
            "-Infinity" | "-inf" => f64::NEG_INFINITY,
            "NaN" | "nan" => f64::NAN,
            other => other.parse().unwrap_or_else(|_| panic!("not a float: {other}")),
        }
    };
    match v {
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) => from_str(s),
        Value::Object(o) => match o.get("__float__") {
            Some(Value::String(s)) => from_str(s),
            _ => panic!("not a float: {v}"),
        },
        _ => panic!("not a float: {v}"),
    }
}

/// Recurrent state of a whole model for one sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct RefState {
    /// Per layer: the last `d_conv` conv inputs of every channel, `[conv_dim][d_conv]`, oldest
    /// first (zeros before the sequence starts).
    pub conv: Vec<Vec<f32>>,
    /// Per layer: Mamba1 `[d_inner][d_state]`, Mamba2 `[nheads][head_dim][d_state]`.
    pub ssm: Vec<Vec<f64>>,
    /// Tokens consumed so far.
    pub pos: usize,
}

/// A model: config plus every tensor widened to f32 (`name → (shape, data)`, row-major).
#[derive(Clone, Debug)]
pub struct RefModel {
    pub config: RefConfig,
    pub weights: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

/// The per-token inputs of the selective scan, after the conv (dt already through softplus).
struct ScanInputs {
    /// Mamba1: `[d_inner]`; Mamba2: `[nheads]`.
    dt: Vec<f64>,
    /// `[d_inner]`.
    x: Vec<f32>,
    /// Mamba1: `[d_state]`; Mamba2: `[ngroups][d_state]`.
    b: Vec<f32>,
    /// Same shape as `b`.
    c: Vec<f32>,
}

impl RefModel {
    /// Reads `dir/config.json` and `dir/model.safetensors` (f32, f16 or bf16 tensors).
    pub fn from_dir(dir: &Path) -> RefModel {
        let text = std::fs::read_to_string(dir.join("config.json"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join("config.json").display()));
        let json: Value = serde_json::from_str(&text).expect("config.json is JSON");
        let config = RefConfig::from_json(&json);
        let bytes = std::fs::read(dir.join("model.safetensors"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join("model.safetensors").display()));
        RefModel::new(config, read_safetensors_f32(&bytes))
    }

    /// Checks that every tensor the config needs is present with the right shape.
    pub fn new(config: RefConfig, weights: HashMap<String, (Vec<usize>, Vec<f32>)>) -> RefModel {
        let model = RefModel { config, weights };
        model.check_shapes();
        model
    }

    fn check_shapes(&self) {
        let c = &self.config;
        let (dm, di, n, k) = (c.d_model, c.d_inner(), c.d_state, c.d_conv);
        let mut expect: Vec<(String, Vec<usize>)> = vec![
            ("backbone.embeddings.weight".into(), vec![c.vocab, dm]),
            ("backbone.norm_f.weight".into(), vec![dm]),
        ];
        if !c.tied {
            expect.push(("lm_head.weight".into(), vec![c.vocab, dm]));
        }
        for l in 0..c.n_layer {
            let p = |s: &str| format!("backbone.layers.{l}.{s}");
            expect.push((p("norm.weight"), vec![dm]));
            expect.push((p("mixer.in_proj.weight"), vec![c.in_proj_dim(), dm]));
            expect.push((p("mixer.conv1d.weight"), vec![c.conv_dim(), 1, k]));
            expect.push((p("mixer.out_proj.weight"), vec![dm, di]));
            if c.use_bias {
                expect.push((p("mixer.in_proj.bias"), vec![c.in_proj_dim()]));
                expect.push((p("mixer.out_proj.bias"), vec![dm]));
            }
            if c.use_conv_bias {
                expect.push((p("mixer.conv1d.bias"), vec![c.conv_dim()]));
            }
            match c.family {
                RefFamily::Mamba1 => {
                    expect.push((p("mixer.x_proj.weight"), vec![c.dt_rank + 2 * n, di]));
                    expect.push((p("mixer.dt_proj.weight"), vec![di, c.dt_rank]));
                    expect.push((p("mixer.dt_proj.bias"), vec![di]));
                    expect.push((p("mixer.A_log"), vec![di, n]));
                    expect.push((p("mixer.D"), vec![di]));
                }
                RefFamily::Mamba2 => {
                    let h = c.nheads();
                    expect.push((p("mixer.dt_bias"), vec![h]));
                    expect.push((p("mixer.A_log"), vec![h]));
                    expect.push((p("mixer.norm.weight"), vec![di]));
                    // D is per head (or per channel with D_has_hdim).
                    let d = &self.tensor(&p("mixer.D")).0;
                    assert!(d == &vec![h] || d == &vec![di], "{}: unexpected shape {d:?}", p("mixer.D"));
                }
            }
        }
        for (name, shape) in expect {
            let (got, data) = self.tensor(&name);
            assert_eq!(got, &shape, "{name}: shape");
            assert_eq!(data.len(), shape.iter().product::<usize>(), "{name}: element count");
        }
    }

    fn tensor(&self, name: &str) -> &(Vec<usize>, Vec<f32>) {
        self.weights.get(name).unwrap_or_else(|| panic!("missing tensor `{name}`"))
    }

    /// The data of tensor `name`.
    pub fn w(&self, name: &str) -> &[f32] {
        &self.tensor(name).1
    }

    fn lw(&self, layer: usize, name: &str) -> &[f32] {
        self.w(&format!("backbone.layers.{layer}.{name}"))
    }

    fn lw_opt(&self, layer: usize, name: &str, present: bool) -> Option<&[f32]> {
        if present {
            Some(self.lw(layer, name))
        } else {
            None
        }
    }

    /// A fresh (all-zero) state.
    pub fn new_state(&self) -> RefState {
        let c = &self.config;
        RefState {
            conv: vec![vec![0.0; c.conv_dim() * c.d_conv]; c.n_layer],
            ssm: vec![vec![0.0; c.ssm_state_len()]; c.n_layer],
            pos: 0,
        }
    }

    fn embed(&self, token: i64) -> Vec<f32> {
        let c = &self.config;
        assert!(token >= 0 && (token as usize) < c.vocab, "token {token} outside the vocabulary 0..{}", c.vocab);
        let t = token as usize;
        self.w("backbone.embeddings.weight")[t * c.d_model..(t + 1) * c.d_model].to_vec()
    }

    fn head(&self, resid: &[f32]) -> Vec<f32> {
        let c = &self.config;
        let h = rmsnorm(resid, self.w("backbone.norm_f.weight"), c.eps);
        let lm = if c.tied { self.w("backbone.embeddings.weight") } else { self.w("lm_head.weight") };
        matvec(lm, c.vocab, c.d_model, &h, None)
    }

    // ---------------------------------------------------------------- whole sequence, layer-major

    /// Logits `[tokens.len() · vocab]` of one sequence from an empty state, evaluated layer by
    /// layer with the recurrent (token-by-token) scan.
    pub fn logits(&self, tokens: &[i64]) -> Vec<f32> {
        self.logits_layer_major(tokens, false)
    }

    /// Like [`RefModel::logits`], but the SSM is evaluated in its quadratic form (O(L²)).
    pub fn logits_quadratic(&self, tokens: &[i64]) -> Vec<f32> {
        self.logits_layer_major(tokens, true)
    }

    fn logits_layer_major(&self, tokens: &[i64], quadratic: bool) -> Vec<f32> {
        let c = &self.config;
        let mut resid: Vec<Vec<f32>> = tokens.iter().map(|&t| self.embed(t)).collect();
        for l in 0..c.n_layer {
            let normed: Vec<Vec<f32>> =
                resid.iter().map(|r| rmsnorm(r, self.lw(l, "norm.weight"), c.eps)).collect();
            let out = self.mixer_sequence(l, &normed, quadratic);
            for (r, o) in resid.iter_mut().zip(&out) {
                for (a, b) in r.iter_mut().zip(o) {
                    *a += *b;
                }
            }
        }
        let mut logits = Vec::with_capacity(tokens.len() * c.vocab);
        for r in &resid {
            logits.extend(self.head(r));
        }
        logits
    }

    /// One mixer over a whole sequence (from an empty state).
    fn mixer_sequence(&self, l: usize, xs: &[Vec<f32>], quadratic: bool) -> Vec<Vec<f32>> {
        let c = &self.config;
        let (di, cd, k) = (c.d_inner(), c.conv_dim(), c.d_conv);
        let in_b = self.lw_opt(l, "mixer.in_proj.bias", c.use_bias);
        let proj: Vec<Vec<f32>> =
            xs.iter().map(|x| matvec(self.lw(l, "mixer.in_proj.weight"), c.in_proj_dim(), c.d_model, x, in_b)).collect();
        // Where the conv input sits inside in_proj's output.
        let conv_off = match c.family {
            RefFamily::Mamba1 => 0,
            RefFamily::Mamba2 => di,
        };
        // Causal depthwise conv with explicit left zero padding.
        let w = self.lw(l, "mixer.conv1d.weight");
        let bias = self.lw_opt(l, "mixer.conv1d.bias", c.use_conv_bias);
        let mut conv_out = Vec::with_capacity(xs.len());
        for t in 0..xs.len() {
            let mut window = vec![0.0f32; cd * k];
            for ch in 0..cd {
                for j in 0..k {
                    // window position j holds the input at time t − (k − 1) + j.
                    if t + j >= k - 1 {
                        window[ch * k + j] = proj[t + j - (k - 1)][conv_off + ch];
                    }
                }
            }
            conv_out.push(conv_apply(w, bias, &window, cd, k));
        }
        // Scan inputs per token.
        let inputs: Vec<ScanInputs> = (0..xs.len())
            .map(|t| match c.family {
                RefFamily::Mamba1 => self.m1_inputs(l, &conv_out[t]),
                RefFamily::Mamba2 => self.m2_inputs(l, &conv_out[t], &proj[t][di + cd..]),
            })
            .collect();
        let ys: Vec<Vec<f32>> = if quadratic {
            match c.family {
                RefFamily::Mamba1 => self.m1_quadratic(l, &inputs),
                RefFamily::Mamba2 => self.m2_quadratic(l, &inputs),
            }
        } else {
            let mut ssm = vec![0.0f64; c.ssm_state_len()];
            inputs
                .iter()
                .map(|inp| match c.family {
                    RefFamily::Mamba1 => self.m1_recurrent(l, inp, &mut ssm),
                    RefFamily::Mamba2 => self.m2_recurrent(l, inp, &mut ssm),
                })
                .collect()
        };
        (0..xs.len())
            .map(|t| {
                let z = match c.family {
                    RefFamily::Mamba1 => &proj[t][di..2 * di],
                    RefFamily::Mamba2 => &proj[t][..di],
                };
                self.mixer_output(l, &ys[t], z)
            })
            .collect()
    }

    // ---------------------------------------------------------------- token by token

    /// Consumes one token, updating `state`; returns that position's logits `[vocab]`.
    pub fn step(&self, state: &mut RefState, token: i64) -> Vec<f32> {
        let c = &self.config;
        let (di, cd, k) = (c.d_inner(), c.conv_dim(), c.d_conv);
        let mut resid = self.embed(token);
        for l in 0..c.n_layer {
            let x = rmsnorm(&resid, self.lw(l, "norm.weight"), c.eps);
            let in_b = self.lw_opt(l, "mixer.in_proj.bias", c.use_bias);
            let proj = matvec(self.lw(l, "mixer.in_proj.weight"), c.in_proj_dim(), c.d_model, &x, in_b);
            let conv_off = match c.family {
                RefFamily::Mamba1 => 0,
                RefFamily::Mamba2 => di,
            };
            // Shift the conv window left by one and append this token's input.
            let window = &mut state.conv[l];
            for ch in 0..cd {
                for j in 0..k - 1 {
                    window[ch * k + j] = window[ch * k + j + 1];
                }
                window[ch * k + k - 1] = proj[conv_off + ch];
            }
            let bias = self.lw_opt(l, "mixer.conv1d.bias", c.use_conv_bias);
            let conv_out = conv_apply(self.lw(l, "mixer.conv1d.weight"), bias, window, cd, k);
            let (y, z) = match c.family {
                RefFamily::Mamba1 => {
                    let inp = self.m1_inputs(l, &conv_out);
                    (self.m1_recurrent(l, &inp, &mut state.ssm[l]), &proj[di..2 * di])
                }
                RefFamily::Mamba2 => {
                    let inp = self.m2_inputs(l, &conv_out, &proj[di + cd..]);
                    (self.m2_recurrent(l, &inp, &mut state.ssm[l]), &proj[..di])
                }
            };
            let out = self.mixer_output(l, &y, z);
            for (a, b) in resid.iter_mut().zip(&out) {
                *a += *b;
            }
        }
        state.pos += 1;
        self.head(&resid)
    }

    /// Feeds `tokens` one at a time through [`RefModel::step`]; returns `[tokens.len() · vocab]`.
    pub fn prefill(&self, state: &mut RefState, tokens: &[i64]) -> Vec<f32> {
        let mut out = Vec::with_capacity(tokens.len() * self.config.vocab);
        for &t in tokens {
            out.extend(self.step(state, t));
        }
        out
    }

    /// [`RefModel::prefill`] from a fresh state.
    pub fn logits_stepwise(&self, tokens: &[i64]) -> Vec<f32> {
        let mut state = self.new_state();
        self.prefill(&mut state, tokens)
    }

    // ---------------------------------------------------------------- mixer pieces

    /// Gate (and for Mamba2 the grouped RMSNorm) and out_proj.
    fn mixer_output(&self, l: usize, y: &[f32], z: &[f32]) -> Vec<f32> {
        let c = &self.config;
        let gated = match c.family {
            RefFamily::Mamba1 => y.iter().zip(z).map(|(&y, &z)| (y as f64 * silu(z as f64)) as f32).collect(),
            RefFamily::Mamba2 => gated_rmsnorm(y, z, self.lw(l, "mixer.norm.weight"), c.ngroups, c.eps),
        };
        let out_b = self.lw_opt(l, "mixer.out_proj.bias", c.use_bias);
        matvec(self.lw(l, "mixer.out_proj.weight"), c.d_model, c.d_inner(), &gated, out_b)
    }

    /// Mamba1: x_proj → (dt_low, B, C); dt = softplus(dt_proj(dt_low) + bias).
    fn m1_inputs(&self, l: usize, x: &[f32]) -> ScanInputs {
        let c = &self.config;
        let (di, n, r) = (c.d_inner(), c.d_state, c.dt_rank);
        let dbc = matvec(self.lw(l, "mixer.x_proj.weight"), r + 2 * n, di, x, None);
        let dt_lin = matvec(self.lw(l, "mixer.dt_proj.weight"), di, r, &dbc[..r], Some(self.lw(l, "mixer.dt_proj.bias")));
        ScanInputs {
            dt: dt_lin.iter().map(|&v| softplus(v as f64)).collect(),
            x: x.to_vec(),
            b: dbc[r..r + n].to_vec(),
            c: dbc[r + n..r + 2 * n].to_vec(),
        }
    }

    /// Mamba1 recurrence for one token; returns `y` (D·x included, gate not yet applied).
    fn m1_recurrent(&self, l: usize, inp: &ScanInputs, h: &mut [f64]) -> Vec<f32> {
        let c = &self.config;
        let (di, n) = (c.d_inner(), c.d_state);
        let a_log = self.lw(l, "mixer.A_log");
        let d_skip = self.lw(l, "mixer.D");
        let mut y = vec![0.0f32; di];
        for d in 0..di {
            let dt = inp.dt[d];
            let x = inp.x[d] as f64;
            let mut acc = 0.0f64;
            for s in 0..n {
                let a = -(a_log[d * n + s] as f64).exp();
                let i = d * n + s;
                h[i] = (dt * a).exp() * h[i] + dt * inp.b[s] as f64 * x;
                acc += inp.c[s] as f64 * h[i];
            }
            y[d] = (acc + d_skip[d] as f64 * x) as f32;
        }
        y
    }

    /// Mamba1 scan over a whole sequence in quadratic form.
    fn m1_quadratic(&self, l: usize, inps: &[ScanInputs]) -> Vec<Vec<f32>> {
        let c = &self.config;
        let (di, n) = (c.d_inner(), c.d_state);
        let a_log = self.lw(l, "mixer.A_log");
        let d_skip = self.lw(l, "mixer.D");
        let mut ys = Vec::with_capacity(inps.len());
        for t in 0..inps.len() {
            let mut y = vec![0.0f32; di];
            for d in 0..di {
                let mut acc = 0.0f64;
                for s in 0..n {
                    let a = -(a_log[d * n + s] as f64).exp();
                    // log of the decay from step s to step t: A · Σ_{r=s+1..t} dt_r.
                    let mut log_decay = 0.0f64;
                    for src in (0..=t).rev() {
                        let contrib = inps[src].dt[d] * inps[src].b[s] as f64 * inps[src].x[d] as f64;
                        acc += inps[t].c[s] as f64 * log_decay.exp() * contrib;
                        log_decay += a * inps[src].dt[d];
                    }
                }
                y[d] = (acc + d_skip[d] as f64 * inps[t].x[d] as f64) as f32;
            }
            ys.push(y);
        }
        ys
    }

    /// Mamba2: split the conv output into x, B, C; dt = clamp(softplus(dt + dt_bias)).
    fn m2_inputs(&self, l: usize, xbc: &[f32], dt_raw: &[f32]) -> ScanInputs {
        let c = &self.config;
        let (di, gn) = (c.d_inner(), c.ngroups * c.d_state);
        let dt_bias = self.lw(l, "mixer.dt_bias");
        assert_eq!(dt_raw.len(), c.nheads());
        let dt = (0..c.nheads())
            .map(|h| {
                let v = softplus(dt_raw[h] as f64 + dt_bias[h] as f64);
                v.max(c.dt_limit.0 as f64).min(c.dt_limit.1 as f64)
            })
            .collect();
        ScanInputs { dt, x: xbc[..di].to_vec(), b: xbc[di..di + gn].to_vec(), c: xbc[di + gn..di + 2 * gn].to_vec() }
    }

    /// The group whose B/C head `h` reads.
    fn group_of(&self, h: usize) -> usize {
        h / (self.config.nheads() / self.config.ngroups)
    }

    /// D for head `h`, channel `p` (D is `[nheads]`, or `[d_inner]` with D_has_hdim).
    fn m2_d(&self, l: usize, h: usize, p: usize) -> f64 {
        let d = self.lw(l, "mixer.D");
        if d.len() == self.config.nheads() {
            d[h] as f64
        } else {
            d[h * self.config.head_dim + p] as f64
        }
    }

    /// Mamba2 recurrence for one token; returns `y` (D·x included, before the gated norm).
    fn m2_recurrent(&self, l: usize, inp: &ScanInputs, s: &mut [f64]) -> Vec<f32> {
        let c = &self.config;
        let (hd, n) = (c.head_dim, c.d_state);
        let a_log = self.lw(l, "mixer.A_log");
        let mut y = vec![0.0f32; c.d_inner()];
        for h in 0..c.nheads() {
            let g = self.group_of(h);
            let dt = inp.dt[h];
            let decay = (dt * -(a_log[h] as f64).exp()).exp();
            for p in 0..hd {
                let x = inp.x[h * hd + p] as f64;
                let mut acc = 0.0f64;
                for k in 0..n {
                    let i = (h * hd + p) * n + k;
                    s[i] = decay * s[i] + dt * x * inp.b[g * n + k] as f64;
                    acc += s[i] * inp.c[g * n + k] as f64;
                }
                y[h * hd + p] = (acc + self.m2_d(l, h, p) * x) as f32;
            }
        }
        y
    }

    /// Mamba2 scan over a whole sequence in quadratic (SSD "attention") form.
    fn m2_quadratic(&self, l: usize, inps: &[ScanInputs]) -> Vec<Vec<f32>> {
        let c = &self.config;
        let (hd, n) = (c.head_dim, c.d_state);
        let a_log = self.lw(l, "mixer.A_log");
        let mut ys = Vec::with_capacity(inps.len());
        for t in 0..inps.len() {
            let mut y = vec![0.0f32; c.d_inner()];
            for h in 0..c.nheads() {
                let g = self.group_of(h);
                let a = -(a_log[h] as f64).exp();
                // (weight of source step s in y_t) = (C_t·B_s) · exp(A · Σ_{r=s+1..t} dt_r) · dt_s.
                let mut weights = vec![0.0f64; t + 1];
                let mut log_decay = 0.0f64;
                for src in (0..=t).rev() {
                    let mut cb = 0.0f64;
                    for k in 0..n {
                        cb += inps[t].c[g * n + k] as f64 * inps[src].b[g * n + k] as f64;
                    }
                    weights[src] = cb * log_decay.exp() * inps[src].dt[h];
                    log_decay += a * inps[src].dt[h];
                }
                for p in 0..hd {
                    let mut acc = 0.0f64;
                    for src in 0..=t {
                        acc += weights[src] * inps[src].x[h * hd + p] as f64;
                    }
                    y[h * hd + p] = (acc + self.m2_d(l, h, p) * inps[t].x[h * hd + p] as f64) as f32;
                }
            }
            ys.push(y);
        }
        ys
    }
}

// -------------------------------------------------------------------- elementary operations

/// `W · x (+ bias)` for row-major `W` `[rows, cols]`, accumulated in f64.
pub fn matvec(w: &[f32], rows: usize, cols: usize, x: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    assert_eq!(w.len(), rows * cols, "matvec: weight size");
    assert_eq!(x.len(), cols, "matvec: input size");
    let mut out = vec![0.0f32; rows];
    for r in 0..rows {
        let mut acc = 0.0f64;
        for k in 0..cols {
            acc += w[r * cols + k] as f64 * x[k] as f64;
        }
        if let Some(b) = bias {
            acc += b[r] as f64;
        }
        out[r] = acc as f32;
    }
    out
}

/// `x / sqrt(mean(x²) + eps) · w`.
pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    assert_eq!(x.len(), w.len(), "rmsnorm: weight size");
    let mut ms = 0.0f64;
    for &v in x {
        ms += v as f64 * v as f64;
    }
    ms /= x.len() as f64;
    let inv = 1.0 / (ms + eps as f64).sqrt();
    x.iter().zip(w).map(|(&v, &w)| (v as f64 * inv * w as f64) as f32).collect()
}

/// mamba_ssm's `RMSNormGated` with `norm_before_gate = False`: `g = y · silu(z)`, then each of
/// the `ngroups` contiguous slices of `g` is RMS-normalised on its own, times `w`.
pub fn gated_rmsnorm(y: &[f32], z: &[f32], w: &[f32], ngroups: usize, eps: f32) -> Vec<f32> {
    assert_eq!(y.len(), z.len());
    assert_eq!(y.len(), w.len());
    assert!(ngroups > 0 && y.len().is_multiple_of(ngroups), "gated_rmsnorm: {} channels, {ngroups} groups", y.len());
    let gs = y.len() / ngroups;
    let g: Vec<f64> = y.iter().zip(z).map(|(&y, &z)| y as f64 * silu(z as f64)).collect();
    let mut out = vec![0.0f32; y.len()];
    for grp in 0..ngroups {
        let slice = &g[grp * gs..(grp + 1) * gs];
        let mut ms = 0.0f64;
        for &v in slice {
            ms += v * v;
        }
        ms /= gs as f64;
        let inv = 1.0 / (ms + eps as f64).sqrt();
        for i in grp * gs..(grp + 1) * gs {
            out[i] = (g[i] * inv * w[i] as f64) as f32;
        }
    }
    out
}

/// Depthwise conv of one time step: `window` is `[channels][k]` (oldest first), weight
/// `[channels, 1, k]`; returns `silu(Σ_j w[c,j]·window[c,j] + bias[c])`.
fn conv_apply(w: &[f32], bias: Option<&[f32]>, window: &[f32], channels: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; channels];
    for ch in 0..channels {
        let mut acc = 0.0f64;
        for j in 0..k {
            acc += w[ch * k + j] as f64 * window[ch * k + j] as f64;
        }
        if let Some(b) = bias {
            acc += b[ch] as f64;
        }
        out[ch] = silu(acc) as f32;
    }
    out
}

pub fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// PyTorch's softplus (threshold 20).
pub fn softplus(x: f64) -> f64 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// ‖a − b‖₂ / ‖b‖₂, in f64.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "rel_err: lengths differ");
    let mut num = 0.0f64;
    let mut den = 0.0f64;
    for (&x, &y) in a.iter().zip(b) {
        num += (x as f64 - y as f64).powi(2);
        den += (y as f64).powi(2);
    }
    (num / den).sqrt()
}

/// Every tensor of a safetensors file, widened to f32 (F32, F16, BF16 and F64 are accepted).
pub fn read_safetensors_f32(bytes: &[u8]) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let st = SafeTensors::deserialize(bytes).expect("safetensors file parses");
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => raw.chunks_exact(2).map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()).collect(),
            Dtype::BF16 => raw.chunks_exact(2).map(|b| half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()).collect(),
            Dtype::F64 => raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
            other => panic!("tensor `{name}`: unsupported dtype {other:?}"),
        };
        out.insert(name, (view.shape().to_vec(), data));
    }
    out
}
