//! The frame every generated CPU kernel shares: a function in the host's calling convention that
//! takes `params`, one entry block whose parameters go to the body, and a plain return.

use cranelift_codegen::ir::{AbiParam, Function, InstBuilder, Signature, Type, UserFuncName, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

/// Builds function `name` of `params`: `body` emits everything between the entry block's
/// parameters and the return.
pub(super) fn build_function(target: TargetFrontendConfig, name: String, params: &[Type], body: impl FnOnce(&mut FunctionBuilder, &[Value])) -> Function {
    let mut sig = Signature::new(target.default_call_conv);
    sig.params.extend(params.iter().map(|t| AbiParam::new(*t)));
    let mut func = Function::with_name_signature(UserFuncName::testcase(name), sig);
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let p = b.block_params(entry).to_vec();
    body(&mut b, &p);
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(target);
    func
}
