/*
 * Generates text with libquamba from C: loads an artifact, streams a reply to a prompt, then
 * (given a second prompt) continues the same conversation, reusing the model's state.
 *
 * Build and run from the repository root:
 *   cargo build --release -p quamba-capi
 *   gcc examples/c/generate.c -Icapi/include -Ltarget/release -lquamba -o generate
 *   LD_LIBRARY_PATH=target/release ./generate model.qmb "ROMEO:" " JULIET:"
 */
#include <stdio.h>

#include "quamba.h"

/* Prints each piece as it arrives and counts the bytes. */
static int print_piece(const char *text, size_t len, void *user_data) {
    size_t *bytes = user_data;
    *bytes += len;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 1; /* keep going */
}

/* Streams one reply; returns 0 or 1 (after printing the error). */
static int reply(quamba_model *model, const char *prompt) {
    char err[512];
    size_t bytes = 0;
    printf("%s", prompt);
    int64_t tokens = quamba_generate(model, prompt, 24, print_piece, &bytes, err, sizeof err);
    if (tokens < 0) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    printf("\n[%lld tokens, %zu bytes]\n", (long long)tokens, bytes);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.qmb PROMPT [NEXT_PROMPT]\n", argv[0]);
        return 2;
    }
    char err[512];
    quamba_model *model = quamba_load(argv[1], err, sizeof err);
    if (model == NULL) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    int failed = reply(model, argv[2]);
    if (!failed && argc > 3) {
        failed = reply(model, argv[3]); /* continues after the first reply */
    }
    quamba_free(model);
    return failed;
}
