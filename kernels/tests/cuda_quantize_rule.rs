//! `quamba.cuh`'s `quantize_with_inverse` gives `quantize_one`'s byte for every input.
//!
//! The norm prologue that every in_proj block runs quantizes by the scale's inverse and divides
//! only near a half-integer; the claim is that this is bit for bit the division's result. CI has
//! no GPU, but both helpers are plain IEEE float code (a multiply, a division, `rintf`, `fminf`,
//! `fmaxf`, round to nearest even as on the GPU without fast math), so this test cuts them out of
//! the library source as they are, compiles them with the host's C compiler and runs both on
//! random inputs, a third of them a few ulps around half-integers (the only place they can
//! differ) and a sixth arbitrary bit patterns (infinities, subnormals, huge values).

use std::process::Command;

/// The definition of the `QDEV` function whose signature starts with `head`, through the brace
/// that closes it (a line holding only `}`).
fn function_source(library: &str, head: &str) -> String {
    let start = library.find(head).unwrap_or_else(|| panic!("quamba.cuh has no `{head}`"));
    let end = library[start..].find("\n}\n").unwrap_or_else(|| panic!("`{head}` has no closing brace on its own line")) + start + 3;
    library[start..end].to_string()
}

#[test]
fn quantize_with_inverse_is_quantize_one() {
    let library = kernels::cuda::codegen::LIBRARY;
    let one = function_source(library, "QDEV i8 quantize_one(float x, float s)");
    let inverse = function_source(library, "QDEV i8 quantize_with_inverse(float x, float s, float inv_s)");
    let harness = format!(
        r#"#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#define QDEV static inline
typedef int8_t i8;
{one}
{inverse}
static uint64_t st = 88172645463325252ull;
static uint32_t next(void) {{ st ^= st << 13; st ^= st >> 7; st ^= st << 17; return (uint32_t)st; }}
static float unit(void) {{ return (next() >> 8) * (1.f / 16777216.f); }}
static float nudge(float x, int ulps) {{ uint32_t b; memcpy(&b, &x, 4); b += ulps; memcpy(&x, &b, 4); return x; }}
int main(void) {{
    long checked = 0, divided = 0, wrong = 0;
    for (long it = 0; it < 6000000; it++) {{
        float s = expf((unit() * 2.f - 1.f) * 12.f), inv = 1.f / s, x;
        switch (next() % 6) {{
        case 0: case 1: x = (unit() * 2.f - 1.f) * 300.f * s; break;
        case 2: case 3: x = nudge(((float)((int)(next() % 520) - 260) + 0.5f) * s, (int)(next() % 9) - 4); break;
        case 4: x = nudge((float)((int)(next() % 520) - 260) * s, (int)(next() % 9) - 4); break;
        default: {{ uint32_t b = next(); memcpy(&x, &b, 4); if (isnan(x)) continue; }}
        }}
        checked++;
        float y = x * inv;
        if (fabsf(y - rintf(y)) > 0.49975586f) divided++;
        if (quantize_one(x, s) != quantize_with_inverse(x, s, inv)) {{
            if (wrong++ < 5) printf("x=%a s=%a: quantize_one %d, quantize_with_inverse %d\n", x, s, quantize_one(x, s), quantize_with_inverse(x, s, inv));
        }}
    }}
    printf("checked %ld, near a half-integer %ld, different %ld\n", checked, divided, wrong);
    return wrong != 0 || divided == 0;
}}
"#
    );
    let dir = std::env::temp_dir().join(format!("quamba-quantize-rule-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary folder");
    let (source, binary) = (dir.join("rule.c"), dir.join("rule"));
    std::fs::write(&source, harness).expect("writing the harness");
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
    let built = Command::new(&cc).args(["-O2", "-std=c11", "-ffp-contract=off", "-o"]).arg(&binary).arg(&source).arg("-lm").output().unwrap_or_else(|e| panic!("running {cc} (the C compiler CI and the README require): {e}"));
    assert!(built.status.success(), "{cc} could not build the helpers: {}", String::from_utf8_lossy(&built.stderr));
    let run = Command::new(&binary).output().expect("running the harness");
    let report = String::from_utf8_lossy(&run.stdout).to_string();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(run.status.success(), "quantize_with_inverse differs from quantize_one (or no input came near a half-integer):\n{report}");
    eprintln!("{}", report.trim());
}
