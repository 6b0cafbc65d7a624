/* Runs one generated kernel on the machine it is compiled for: the replay half of
 * kernels/tests/aarch64_replay.rs, built there for x86-64 (gcc) and aarch64
 * (aarch64-linux-gnu-gcc, run under qemu-aarch64).
 *
 * Input file, little-endian: u64 code length, the kernel's machine code (position-independent,
 * no relocations: its constants sit after the code), u64 argument count, then per argument a
 * u8 kind and its value: 0 = i64, 1 = f32 (the last argument only), 2 = buffer (u64 length,
 * bytes; the kernel gets a 64-byte aligned copy). Output file: every buffer after the call, in
 * argument order. Exit status 0 on success; anything else is a harness error. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MAX_ARGS 12

static void fail(const char *what) {
    fprintf(stderr, "harness: %s\n", what);
    exit(2);
}

static void read_exact(FILE *f, void *dst, size_t n) {
    if (n && fread(dst, 1, n, f) != n) fail("input file is truncated");
}

static uint64_t read_u64(FILE *f) {
    uint64_t v;
    read_exact(f, &v, sizeof v);
    return v;
}

typedef int64_t I;
/* The generated kernels take pointer-sized integers, then at most one f32. */
static void call(void *code, int ints, const I *a, int has_float, float f) {
    if (!has_float) {
        switch (ints) {
        case 1: ((void (*)(I))code)(a[0]); return;
        case 2: ((void (*)(I, I))code)(a[0], a[1]); return;
        case 3: ((void (*)(I, I, I))code)(a[0], a[1], a[2]); return;
        case 4: ((void (*)(I, I, I, I))code)(a[0], a[1], a[2], a[3]); return;
        case 5: ((void (*)(I, I, I, I, I))code)(a[0], a[1], a[2], a[3], a[4]); return;
        case 6: ((void (*)(I, I, I, I, I, I))code)(a[0], a[1], a[2], a[3], a[4], a[5]); return;
        case 7: ((void (*)(I, I, I, I, I, I, I))code)(a[0], a[1], a[2], a[3], a[4], a[5], a[6]); return;
        case 8: ((void (*)(I, I, I, I, I, I, I, I))code)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]); return;
        case 9: ((void (*)(I, I, I, I, I, I, I, I, I))code)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]); return;
        case 10: ((void (*)(I, I, I, I, I, I, I, I, I, I))code)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]); return;
        }
    } else {
        switch (ints) {
        case 8: ((void (*)(I, I, I, I, I, I, I, I, float))code)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], f); return;
        case 10: ((void (*)(I, I, I, I, I, I, I, I, I, I, float))code)(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], f); return;
        }
    }
    fail("no call shape for this argument list");
}

int main(int argc, char **argv) {
    if (argc != 3) fail("usage: harness INPUT OUTPUT");
    FILE *in = fopen(argv[1], "rb");
    if (!in) fail("cannot open the input file");
    uint64_t code_len = read_u64(in);
    size_t map_len = (code_len + 4095) & ~(size_t)4095;
    void *code = mmap(NULL, map_len ? map_len : 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (code == MAP_FAILED) fail("mmap");
    read_exact(in, code, code_len);
    if (mprotect(code, map_len, PROT_READ | PROT_EXEC) != 0) fail("mprotect");
    __builtin___clear_cache((char *)code, (char *)code + code_len);

    uint64_t count = read_u64(in);
    if (count > MAX_ARGS) fail("too many arguments");
    I ints[MAX_ARGS];
    void *buffers[MAX_ARGS];
    uint64_t lengths[MAX_ARGS];
    int n_ints = 0, n_buffers = 0, has_float = 0;
    float f = 0;
    for (uint64_t i = 0; i < count; i++) {
        uint8_t kind;
        read_exact(in, &kind, 1);
        if (has_float) fail("an argument after the f32");
        if (kind == 0) {
            read_exact(in, &ints[n_ints++], 8);
        } else if (kind == 1) {
            read_exact(in, &f, 4);
            has_float = 1;
        } else if (kind == 2) {
            uint64_t len = read_u64(in);
            void *buf = aligned_alloc(64, (len + 63) & ~(uint64_t)63);
            if (!buf) fail("out of memory");
            read_exact(in, buf, len);
            buffers[n_buffers] = buf;
            lengths[n_buffers++] = len;
            ints[n_ints++] = (I)(intptr_t)buf;
        } else {
            fail("unknown argument kind");
        }
    }
    fclose(in);
    call(code, n_ints, ints, has_float, f);

    FILE *out = fopen(argv[2], "wb");
    if (!out) fail("cannot open the output file");
    for (int b = 0; b < n_buffers; b++) {
        if (fwrite(buffers[b], 1, lengths[b], out) != lengths[b]) fail("write");
    }
    return fclose(out) == 0 ? 0 : 2;
}
