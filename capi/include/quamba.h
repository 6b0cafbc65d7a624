/*
 * quamba.h — C interface to the quamba runtime (libquamba, crate `capi/`).
 *
 * Load a compiled .qmb artifact once, then generate text; each model handle keeps its
 * conversation state, so a second quamba_generate call continues where the first stopped.
 *
 *     char err[512];
 *     quamba_model *m = quamba_load("model.qmb", err, sizeof err);
 *     if (!m) { fprintf(stderr, "%s\n", err); return 1; }
 *     quamba_generate(m, "ROMEO:", 32, print_piece, NULL, err, sizeof err);
 *     quamba_free(m);
 *
 * Errors: functions that can fail return NULL or a negative value and write a NUL-terminated
 * message (cut to fit) into `err` when `err` is not NULL and `err_len` > 0.
 * Threads: a handle may be used from any thread, but not from two threads at once.
 */
#ifndef QUAMBA_H
#define QUAMBA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A loaded model plus one conversation's recurrent state. */
typedef struct quamba_model quamba_model;

/*
 * Called with each new piece of generated text: `len` bytes of UTF-8 at `text`, followed by a
 * NUL. Return nonzero to continue, 0 to stop generating.
 */
typedef int (*quamba_text_callback)(const char *text, size_t len, void *user_data);

/* Opens and checks the artifact at `path` (UTF-8). Returns NULL on error. */
quamba_model *quamba_load(const char *path, char *err, size_t err_len);

/*
 * Feeds `prompt` (UTF-8, NUL-terminated) after everything this handle has seen, then generates
 * up to `max_tokens` tokens, passing each piece of text to `callback` (which may be NULL).
 * Returns the number of tokens generated, or -1 on error.
 */
int64_t quamba_generate(quamba_model *model, const char *prompt, size_t max_tokens,
                        quamba_text_callback callback, void *user_data, char *err, size_t err_len);

/*
 * Sampling for later quamba_generate calls: temperature 0 = greedy (the default), top_p in
 * (0, 1], and a seed for reproducible sampling. Returns 0, or -1 on an invalid value.
 */
int quamba_set_sampling(quamba_model *model, float temperature, float top_p, uint64_t seed,
                        char *err, size_t err_len);

/* Forgets the conversation: the next quamba_generate starts from a fresh state. */
void quamba_reset(quamba_model *model);

/* Frees the handle; NULL is allowed. */
void quamba_free(quamba_model *model);

#ifdef __cplusplus
}
#endif

#endif /* QUAMBA_H */
