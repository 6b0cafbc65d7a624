//! What the codegen tests share: a frontend config for golden CLIF, ISAs for either target
//! architecture whatever the host, and lowering a function to its disassembly.

#![allow(dead_code)]

use std::str::FromStr;

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::Function;
use cranelift_codegen::isa::{self, CallConv, OwnedTargetIsa, TargetFrontendConfig};
use cranelift_codegen::settings::{self, Configurable};
use target_lexicon::Triple;

/// x86-64 System V, the frontend config the golden CLIF is written for.
pub fn sysv_64() -> TargetFrontendConfig {
    TargetFrontendConfig { default_call_conv: CallConv::SystemV, pointer_width: target_lexicon::PointerWidth::U64, page_size_align_log2: 12 }
}

/// The ISA of `triple` with `features` (cranelift setting names such as `has_avx2`), optimising
/// for speed as the runtime's JIT does.
pub fn isa_for(triple: &str, features: &[&str]) -> OwnedTargetIsa {
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").unwrap();
    let mut builder = isa::lookup(Triple::from_str(triple).unwrap()).unwrap_or_else(|e| panic!("{triple}: {e}"));
    for f in features {
        builder.enable(f).unwrap_or_else(|e| panic!("{triple} {f}: {e}"));
    }
    builder.finish(settings::Flags::new(flags)).unwrap()
}

/// `func` compiled for `isa`, as cranelift's disassembly (VCode) text; `name` labels a failure.
pub fn lower(isa: &OwnedTargetIsa, name: &str, func: Function) -> String {
    let mut ctx = cranelift_codegen::Context::for_function(func);
    ctx.set_disasm(true);
    let compiled = ctx.compile(&**isa, &mut ControlPlane::default()).unwrap_or_else(|e| panic!("{} {name}: {e:?}", isa.triple()));
    compiled.vcode.clone().expect("disassembly was asked for")
}

/// [`lower`] of each named function.
pub fn lower_each(isa: &OwnedTargetIsa, funcs: Vec<(String, Function)>) -> Vec<(String, String)> {
    funcs.into_iter().map(|(name, func)| (name.clone(), lower(isa, &name, func))).collect()
}
