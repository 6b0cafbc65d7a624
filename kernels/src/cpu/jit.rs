//! Compiles generated CLIF for the host CPU into executable memory (cranelift-jit).
//!
//! This module only produces code addresses; turning one into a callable function is `unsafe`
//! and happens in the runtime (`runtime::jit`), next to the checks that make the call sound.

use std::collections::HashMap;

use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};

use super::qgemv::{build_qgemv, qgemv_symbol};
use super::qlinear::{build_qlinear, DotOrder, QLinearSpec};
use super::quantize::{build_quantize, QuantizeSpec};
use super::KernelError;

/// The finalized machine code of one quantized-linear kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QLinearCode {
    /// The shape it was specialised to.
    pub spec: QLinearSpec,
    /// Address of its first instruction; valid while the [`CpuJit`] that made it lives.
    pub address: usize,
}

/// The finalized machine code of one decode (one-row) quantized-linear kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QGemvCode {
    /// The shape it was specialised to.
    pub spec: QLinearSpec,
    /// Address of its first instruction; valid while the [`CpuJit`] that made it lives.
    pub address: usize,
}

/// The finalized machine code of one quantize kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantizeCode {
    /// The shape it was specialised to.
    pub spec: QuantizeSpec,
    /// Address of its first instruction; valid while the [`CpuJit`] that made it lives.
    pub address: usize,
}

/// A JIT for the host: one executable-memory arena, one kernel per distinct shape.
pub struct CpuJit {
    module: JITModule,
    qlinear: HashMap<QLinearSpec, QLinearCode>,
    qgemv: HashMap<QLinearSpec, QGemvCode>,
    quantize: HashMap<QuantizeSpec, QuantizeCode>,
    /// Every other kernel (the float step kernels), by symbol: the symbol names the whole spec.
    by_symbol: HashMap<String, usize>,
}

impl CpuJit {
    /// A JIT for the CPU this process runs on, with every SIMD extension it reports.
    pub fn for_host() -> Result<CpuJit, KernelError> {
        let mut flags = settings::builder();
        for (name, value) in [("opt_level", "speed"), ("is_pic", "false")] {
            flags.set(name, value).map_err(|e| KernelError::Isa(format!("{name}={value}: {e}")))?;
        }
        let isa = cranelift_native::builder()
            .map_err(|e| KernelError::Isa(e.to_string()))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| KernelError::Isa(e.to_string()))?;
        let module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        Ok(CpuJit { module, qlinear: HashMap::new(), qgemv: HashMap::new(), quantize: HashMap::new(), by_symbol: HashMap::new() })
    }

    /// The host's target triple, e.g. `x86_64-unknown-linux-gnu`.
    pub fn triple(&self) -> String {
        self.module.isa().triple().to_string()
    }

    /// The kernel for `spec`, compiled on first request.
    pub fn qlinear(&mut self, spec: QLinearSpec) -> Result<QLinearCode, KernelError> {
        if let Some(code) = self.qlinear.get(&spec) {
            return Ok(*code);
        }
        let func = build_qlinear(&spec, self.module.isa().frontend_config(), DotOrder::for_isa(self.module.isa()))?;
        let code = QLinearCode { spec, address: self.define(&spec.symbol(), func)? };
        self.qlinear.insert(spec, code);
        Ok(code)
    }

    /// The decode kernel for `spec`, compiled on first request.
    pub fn qgemv(&mut self, spec: QLinearSpec) -> Result<QGemvCode, KernelError> {
        if let Some(code) = self.qgemv.get(&spec) {
            return Ok(*code);
        }
        let func = build_qgemv(&spec, self.module.isa().frontend_config(), DotOrder::for_isa(self.module.isa()))?;
        let code = QGemvCode { spec, address: self.define(&qgemv_symbol(&spec), func)? };
        self.qgemv.insert(spec, code);
        Ok(code)
    }

    /// The quantize kernel for `spec`, compiled on first request.
    pub fn quantize(&mut self, spec: QuantizeSpec) -> Result<QuantizeCode, KernelError> {
        if let Some(code) = self.quantize.get(&spec) {
            return Ok(*code);
        }
        let func = build_quantize(&spec, self.module.isa().frontend_config())?;
        let code = QuantizeCode { spec, address: self.define(&spec.symbol(), func)? };
        self.quantize.insert(spec, code);
        Ok(code)
    }

    /// The address of the kernel defined under `symbol`, built by `build` (given the host's
    /// frontend config) on first request. `symbol` must name everything the kernel is
    /// specialised to: a second request with the same symbol returns the first kernel.
    pub fn kernel(&mut self, symbol: &str, build: impl FnOnce(TargetFrontendConfig) -> Result<cranelift_codegen::ir::Function, KernelError>) -> Result<usize, KernelError> {
        if let Some(address) = self.by_symbol.get(symbol) {
            return Ok(*address);
        }
        let func = build(self.module.isa().frontend_config())?;
        let address = self.define(symbol, func)?;
        self.by_symbol.insert(symbol.to_string(), address);
        Ok(address)
    }

    /// Compiles `func` under `symbol` and returns the address of its finalized code.
    fn define(&mut self, symbol: &str, func: cranelift_codegen::ir::Function) -> Result<usize, KernelError> {
        let codegen = |e: cranelift_module::ModuleError| KernelError::Codegen(format!("{symbol}: {e:?}"));
        let id = self.module.declare_function(symbol, Linkage::Local, &func.signature).map_err(codegen)?;
        let mut ctx = self.module.make_context();
        ctx.func = func;
        self.module.define_function(id, &mut ctx).map_err(codegen)?;
        self.module.finalize_definitions().map_err(codegen)?;
        Ok(self.module.get_finalized_function(id) as usize)
    }
}

