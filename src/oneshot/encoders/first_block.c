/* Conv-4's first block fused: 3x3 convolution of a 1-channel image (zero padding 1, batch norm already folded
 * into the weights), 2x2 max-pooling, ReLU -- forward and the weight gradient -- in one pass over the image.
 *
 * Layouts (all contiguous, float32 unless stated):
 *   image   (B, H, W)
 *   weight  (9, O)        the folded 3x3 filters, tap-major (tap = 3 * row + column), so channels are contiguous
 *   bias    (O)
 *   out     (B, Ho, Wo, O) relu(maxpool(conv)), Ho = H / 2, Wo = W / 2 (floor, as nn.MaxPool2d(2)); float32, or
 *                          bfloat16 (uint16 bits, rounded to nearest even) when bf16 != 0
 *   code    (B, Ho, Wo, O) uint8: which of the window's four positions won (0..3, row-major, the first of equal
 *                          values, as nn.MaxPool2d), or 4 where the ReLU cut the output to 0 (no gradient)
 *   grad    (B, Ho, Wo, O) the gradient of the loss with respect to out (float32, or bfloat16 when bf16 != 0)
 *   grad_weight (9, O), grad_bias (O): sums over the batch, accumulated in double per image.
 *   first_block_moments: sums over every position of the 3x3 patches (9) and of their products (9 x 9), double:
 *                          the batch-norm statistics of the folded convolution (oneshot.encoders.batch_norm_fold).
 *
 * Built by oneshot.encoders.first_block_kernel with the system C compiler and loaded with ctypes.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TAPS 9
#define MAX_CHANNELS 256
#define MAX_WIDTH 512

static inline uint16_t to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    bits += 0x7FFFu + ((bits >> 16) & 1u); /* round to nearest even (finite values) */
    return (uint16_t)(bits >> 16);
}

static inline float from_bf16(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* The 4x4 input window feeding the pooled pixel (i, j): rows 2i-1 .. 2i+2, columns 2j-1 .. 2j+2 (zero outside). */
static void load_window(const float *img, int H, int W, int i, int j, float v[16]) {
    for (int r = 0; r < 4; r++) {
        int y = 2 * i - 1 + r;
        for (int c = 0; c < 4; c++) {
            int x = 2 * j - 1 + c;
            v[4 * r + c] = (y >= 0 && y < H && x >= 0 && x < W) ? img[y * W + x] : 0.0f;
        }
    }
}

/* The 3x3 patch of window position q (0: top-left, 1: top-right, 2: bottom-left, 3: bottom-right). */
static void patch_of(const float v[16], int q, float p[TAPS]) {
    int r0 = q >> 1, c0 = q & 1;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++) p[3 * r + c] = v[4 * (r0 + r) + (c0 + c)];
}

int first_block_forward(const float *image, const float *weight, const float *bias, void *out, uint8_t *code,
                        int B, int H, int W, int O, int bf16, int threads) {
    if (O > MAX_CHANNELS) return 1;
    int Ho = H / 2, Wo = W / 2;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int b = 0; b < B; b++) {
        const float *img = image + (size_t)b * H * W;
        float v[16], p[4][TAPS];
        for (int i = 0; i < Ho; i++) {
            for (int j = 0; j < Wo; j++) {
                load_window(img, H, W, i, j, v);
                for (int q = 0; q < 4; q++) patch_of(v, q, p[q]);
                size_t base = (((size_t)b * Ho + i) * Wo + j) * O;
                float *o_f32 = (float *)out + base;
                uint16_t *o_b16 = (uint16_t *)out + base;
                uint8_t *o_code = code + base;
                const float *w0 = weight, *w1 = weight + O, *w2 = weight + 2 * O, *w3 = weight + 3 * O,
                            *w4 = weight + 4 * O, *w5 = weight + 5 * O, *w6 = weight + 6 * O, *w7 = weight + 7 * O,
                            *w8 = weight + 8 * O;
#define DOT(P) (bias[o] + w0[o] * P[0] + w1[o] * P[1] + w2[o] * P[2] + w3[o] * P[3] + w4[o] * P[4] + \
                w5[o] * P[5] + w6[o] * P[6] + w7[o] * P[7] + w8[o] * P[8])
                const float *p0 = p[0], *p1 = p[1], *p2 = p[2], *p3 = p[3];
#pragma omp simd
                for (int o = 0; o < O; o++) {
                    float s0 = DOT(p0), s1 = DOT(p1), s2 = DOT(p2), s3 = DOT(p3);
                    /* strict comparisons: the first of equal values wins, as nn.MaxPool2d */
                    float best = s0, which = 0.0f;
                    which = s1 > best ? 1.0f : which;
                    best = s1 > best ? s1 : best;
                    which = s2 > best ? 2.0f : which;
                    best = s2 > best ? s2 : best;
                    which = s3 > best ? 3.0f : which;
                    best = s3 > best ? s3 : best;
                    float y = best > 0.0f ? best : 0.0f;
                    if (bf16)
                        o_b16[o] = to_bf16(y);
                    else
                        o_f32[o] = y;
                    o_code[o] = (uint8_t)(best > 0.0f ? which : 4.0f);
                }
#undef DOT
            }
        }
    }
    return 0;
}

int first_block_backward(const float *image, const uint8_t *code, const void *grad, double *grad_weight,
                         double *grad_bias, int B, int H, int W, int O, int bf16, int threads) {
    if (O > MAX_CHANNELS) return 1;
    int Ho = H / 2, Wo = W / 2;
    if (threads < 1) threads = 1;
    /* One slot of partial sums per thread, added in thread order afterwards: the same sums for the same thread
     * count on every call (a static schedule gives each thread the same images), so a resumed run retraces an
     * unbroken one. */
    double *slots = calloc((size_t)threads * (TAPS + 1) * O, sizeof(double));
    if (slots == NULL) return 2;
#pragma omp parallel num_threads(threads)
    {
        double *acc_w = slots + (size_t)omp_get_thread_num() * (TAPS + 1) * O, *acc_b = acc_w + TAPS * O;
        float img_w[TAPS * MAX_CHANNELS], img_b[MAX_CHANNELS];
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            const float *img = image + (size_t)b * H * W;
            float v[16], p[4][TAPS];
            memset(img_w, 0, sizeof(float) * TAPS * O);
            memset(img_b, 0, sizeof(float) * O);
            for (int i = 0; i < Ho; i++) {
                for (int j = 0; j < Wo; j++) {
                    load_window(img, H, W, i, j, v);
                    for (int q = 0; q < 4; q++) patch_of(v, q, p[q]);
                    size_t base = (((size_t)b * Ho + i) * Wo + j) * O;
                    const float *g_f32 = (const float *)grad + base;
                    const uint16_t *g_b16 = (const uint16_t *)grad + base;
                    const uint8_t *k = code + base;
#pragma omp simd
                    for (int o = 0; o < O; o++) {
                        int q = k[o];
                        float go = bf16 ? from_bf16(g_b16[o]) : g_f32[o];
                        img_b[o] += q < 4 ? go : 0.0f;
                        for (int w = 0; w < 4; w++) {
                            float m = q == w ? go : 0.0f;
                            for (int t = 0; t < TAPS; t++) img_w[t * O + o] += m * p[w][t];
                        }
                    }
                }
            }
            for (int n = 0; n < TAPS * O; n++) acc_w[n] += img_w[n];
            for (int o = 0; o < O; o++) acc_b[o] += img_b[o];
        }
    }
    memset(grad_weight, 0, sizeof(double) * TAPS * O);
    memset(grad_bias, 0, sizeof(double) * O);
    for (int k = 0; k < threads; k++) {
        const double *acc_w = slots + (size_t)k * (TAPS + 1) * O, *acc_b = acc_w + TAPS * O;
        for (int n = 0; n < TAPS * O; n++) grad_weight[n] += acc_w[n];
        for (int o = 0; o < O; o++) grad_bias[o] += acc_b[o];
    }
    free(slots);
    return 0;
}

int first_block_moments(const float *image, double *sums, double *products, int B, int H, int W, int threads) {
    if (W > MAX_WIDTH) return 1;
    if (threads < 1) threads = 1;
    double *slots = calloc((size_t)threads * (TAPS + TAPS * TAPS), sizeof(double)); /* per thread, as above */
    if (slots == NULL) return 2;
#pragma omp parallel num_threads(threads)
    {
        double *s_acc = slots + (size_t)omp_get_thread_num() * (TAPS + TAPS * TAPS), *p_acc = s_acc + TAPS;
        float row[3][MAX_WIDTH + 2];
        float s_img[TAPS], p_img[TAPS * TAPS];
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            const float *img = image + (size_t)b * H * W;
            memset(s_img, 0, sizeof(s_img));
            memset(p_img, 0, sizeof(p_img));
            for (int y = 0; y < H; y++) {
                for (int r = 0; r < 3; r++) { /* rows y-1, y, y+1 with a zero border */
                    int yy = y - 1 + r;
                    row[r][0] = row[r][W + 1] = 0.0f;
                    for (int x = 0; x < W; x++) row[r][x + 1] = (yy >= 0 && yy < H) ? img[yy * W + x] : 0.0f;
                }
                for (int t = 0; t < TAPS; t++) {
                    const float *a = row[t / 3] + t % 3;
                    float s = 0.0f;
#pragma omp simd reduction(+ : s)
                    for (int x = 0; x < W; x++) s += a[x];
                    s_img[t] += s;
                    for (int u = t; u < TAPS; u++) {
                        const float *c = row[u / 3] + u % 3;
                        float m = 0.0f;
#pragma omp simd reduction(+ : m)
                        for (int x = 0; x < W; x++) m += a[x] * c[x];
                        p_img[t * TAPS + u] += m;
                    }
                }
            }
            for (int t = 0; t < TAPS; t++) s_acc[t] += s_img[t];
            for (int n = 0; n < TAPS * TAPS; n++) p_acc[n] += p_img[n];
        }
    }
    memset(sums, 0, sizeof(double) * TAPS);
    memset(products, 0, sizeof(double) * TAPS * TAPS);
    for (int k = 0; k < threads; k++) {
        const double *s_acc = slots + (size_t)k * (TAPS + TAPS * TAPS), *p_acc = s_acc + TAPS;
        for (int t = 0; t < TAPS; t++) sums[t] += s_acc[t];
        for (int n = 0; n < TAPS * TAPS; n++) products[n] += p_acc[n];
    }
    free(slots);
    for (int t = 0; t < TAPS; t++) /* the lower triangle from the upper */
        for (int u = 0; u < t; u++) products[t * TAPS + u] = products[u * TAPS + t];
    return 0;
}
