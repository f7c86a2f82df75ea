/*
 * Fused nearest-code search: for each row x of X, the smallest and second-smallest score
 * |c|^2 - 2 x.c over the codebook and the (lowest) index of the smallest, computed tile by tile in
 * registers so that the [rows, K] score matrix is never written to memory (a matrix product followed
 * by a minimum is bound by that memory traffic when D is small).
 *
 * The codebook is packed by Python as [K/16][D][16] (K padded with +inf norms). Three code paths, picked
 * per call by name (Python chooses: nst_hf.quantizers.fused, NST_HF_FUSED_KERNEL):
 * - "avx512": one tile of 16 codes is one zmm vector per dimension; passes of 14 rows x 2 tiles
 *   (28 accumulators in the 32 zmm registers), see search_avx512; for D <= 128 a row keeps its best, code and
 *   runner-up as scalars, a pass compares its scores with the runner-up only (fold512), and code blocks stay in L1;
 * - "avx2": a tile is two AVX vectors per dimension, codes l and l + 8 share lane l of the running
 *   best/runner-up state; rows go in tiles of ROWS = 6 (12 accumulators + 2 code vectors + 1 broadcast
 *   fill the 16 AVX registers);
 * - "generic": portable C, one row at a time.
 * The last row tile repeats its last row. Every path sums dot products in blocks of DIM_BLOCK dimensions.
 * Scores are plain fp32; the caller proves each winner with an error bound and re-decides near-ties in
 * float64, so the evaluation order here never changes a token.
 *
 * nearest_two(x, packed, norms, best, index, second, rows, dim, padded_codes, row_start, row_stop, kernel)
 * releases the GIL, so several Python threads can search disjoint row ranges at once; kernels() lists
 * the paths usable on this CPU with their row tiles. near_codes rescans the near-tie rows with the same
 * passes and returns every code within a limit; nearest_two_pruned is the experimental search that skips
 * groups of codes (AVX-512) and group_bounds its bounds; fma_flops is the bench's FMA-throughput probe; pair_distances the float64
 * distances of the near-tie decision.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LANES 16
/* Dot products are summed in blocks of DIM_BLOCK dimensions, then the block sums in order: the rounding
 * error of a score is then at most gamma(DIM_BLOCK + ceil(D / DIM_BLOCK) - 1) instead of gamma(D) times the
 * sum of |x_d c_d| (blocked summation), which proves far more winners of D = 256-512 codebooks without a
 * second pass. Python reads the constant to compute the bound (fused.score_error_terms). */
#ifndef DIM_BLOCK
#define DIM_BLOCK 64
#endif
#ifndef ROWS
#define ROWS 6
#endif

typedef int (*search_fn)(const float *, const float *, const float *, float *, int64_t *, float *,
                          Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t);

/* acc[l] = x . code l of one packed tile, summed in blocks of DIM_BLOCK dimensions and then the block sums in
 * order (the summation score_error_terms bounds); the portable paths' one dot-product loop. */
static inline void tile_dots(const float *xi, const float *tile, Py_ssize_t dim, float acc[LANES]) {
    for (Py_ssize_t d0 = 0; d0 < dim; d0 += DIM_BLOCK) {
        const Py_ssize_t d1 = d0 + DIM_BLOCK < dim ? d0 + DIM_BLOCK : dim;
        float part[LANES] = {0};
        for (Py_ssize_t d = d0; d < d1; d++) {
            const float xv = xi[d];
            for (int l = 0; l < LANES; l++) part[l] += xv * tile[d * LANES + l];
        }
        for (int l = 0; l < LANES; l++) acc[l] = d0 == 0 ? part[l] : acc[l] + part[l];
    }
}

/* Portable version (any CPU): same tiling, the compiler vectorises what it can. */
static int search_generic(const float *x, const float *packed, const float *norms, float *best,
                           int64_t *index, float *second, Py_ssize_t rows, Py_ssize_t dim,
                           Py_ssize_t codes, Py_ssize_t row_start, Py_ssize_t row_stop) {
    (void)rows;
    for (Py_ssize_t i = row_start; i < row_stop; i++) {
        const float *xi = x + i * dim;
        float b1 = INFINITY, b2 = INFINITY;
        int64_t bi = 0;
        for (Py_ssize_t t = 0; t < codes / LANES; t++) {
            float acc[LANES];
            tile_dots(xi, packed + t * dim * LANES, dim, acc);
            for (int l = 0; l < LANES; l++) {
                const float s = norms[t * LANES + l] - 2.0f * acc[l];
                if (s < b1) {
                    b2 = b1;
                    b1 = s;
                    bi = t * LANES + l;
                } else if (s < b2) {
                    b2 = s;
                }
            }
        }
        best[i] = b1;
        index[i] = bi;
        second[i] = b2;
    }
    return 0;
}

/* Candidate pairs of the near-tie check: for each selected row, every code whose score is <= the row's limit.
 * Pairs go to out_rows/out_codes up to cap; the return value is the number found (the caller retries with a
 * larger buffer when it exceeds cap). */
typedef struct {
    int64_t *rows, *codes;
    Py_ssize_t count, cap;
} pair_sink;

/* What a near-tie pass needs: the tile's first `valid` rows (their ids and fp32 limits) and the pair sink. */
typedef struct {
    const int64_t *rows;
    const float *limits;
    int valid;
    pair_sink *sink;
} near_tile;

static inline void emit_pair(pair_sink *sink, int64_t row, int64_t code) {
    if (sink->count < sink->cap) {
        sink->rows[sink->count] = row;
        sink->codes[sink->count] = code;
    }
    sink->count++;
}

/* Portable scores (the blocked sums of search_generic), one selected row at a time. */
__attribute__((always_inline)) static inline void near_generic_body(const float *x, const float *packed,
                                                                    const float *norms, const int64_t *sel,
                                                                    const float *limits, Py_ssize_t count,
                                                                    Py_ssize_t dim, Py_ssize_t codes,
                                                                    pair_sink *sink) {
    for (Py_ssize_t i = 0; i < count; i++) {
        const float *xi = x + sel[i] * dim;
        for (Py_ssize_t t = 0; t < codes / LANES; t++) {
            float acc[LANES];
            tile_dots(xi, packed + t * dim * LANES, dim, acc);
            for (int l = 0; l < LANES; l++)
                if (norms[t * LANES + l] - 2.0f * acc[l] <= limits[i]) emit_pair(sink, sel[i], t * LANES + l);
        }
    }
}

typedef int (*near_fn)(const float *, const float *, const float *, const int64_t *, const float *, Py_ssize_t,
                       Py_ssize_t, Py_ssize_t, pair_sink *);

static int near_generic(const float *x, const float *packed, const float *norms, const int64_t *sel,
                        const float *limits, Py_ssize_t count, Py_ssize_t dim, Py_ssize_t codes, pair_sink *sink) {
    near_generic_body(x, packed, norms, sel, limits, count, dim, codes, sink);
    return 0;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* One row's per-lane bests → the row's best (lowest code on equal scores), its code and the runner-up (the
 * smallest of every lane's runner-up and the other lanes' bests); shared by the AVX2 and AVX-512 paths. */
static void reduce_lanes(const float *b1, const float *b2, const int32_t *bi, int lanes, float *best,
                         int64_t *index, float *second) {
    int w = 0;
    for (int l = 1; l < lanes; l++)
        if (b1[l] < b1[w] || (b1[l] == b1[w] && bi[l] < bi[w])) w = l;
    float runner = INFINITY;
    for (int l = 0; l < lanes; l++) {
        if (b2[l] < runner) runner = b2[l];
        if (l != w && b1[l] < runner) runner = b1[l];
    }
    *best = b1[w];
    *index = bi[w];
    *second = runner;
}


/* One row's best score so far, its code and the runner-up: search_generic's b1, bi and b2. */
typedef struct {
    float b1, b2;
    int64_t bi;
} row_best;

/* Fold the scores of tile t's lanes in `hits` (bit l: code t * LANES + l; scores[l] its score) into a row_best
 * in ascending code order, exactly as search_generic folds them: a strictly smaller score replaces the best
 * (so the lower code wins on equal scores), and one below the runner-up replaces it. */
static inline void fold_hits(row_best *rb, const float *scores, uint32_t hits, Py_ssize_t t) {
    while (hits) {
        const int l = __builtin_ctz(hits);
        const float s = scores[l];
        hits &= hits - 1;
        if (s < rb->b2) {
            if (s < rb->b1) {
                rb->b2 = rb->b1;
                rb->b1 = s;
                rb->bi = t * LANES + l;
            } else {
                rb->b2 = s;
            }
        }
    }
}

/* A row's result from its row_best: the arrays every search path returns. */
static inline void put_row_best(const row_best *rb, float *best, int64_t *index, float *second) {
    *best = rb->b1;
    *index = rb->bi;
    *second = rb->b2;
}

/* Per-lane state of one row: best, its code and the runner-up in each of 8 lanes (2 codes per tile). */
typedef struct {
    __m256 b1, b2;
    __m256i bi;
} lane_state;

/* Codes l and l + 8 of a tile share lane l: the pair's winner (the lower code on equal scores) updates
 * the lane's best, and its loser is a runner-up candidate. */
__attribute__((target("avx2,fma"))) static inline void update_state(lane_state *st, __m256 s0, __m256 s1,
                                                                     __m256i ids0, __m256i ids1) {
    const __m256 second_wins = _mm256_cmp_ps(s1, s0, _CMP_LT_OQ);
    const __m256 low = _mm256_min_ps(s0, s1), high = _mm256_max_ps(s0, s1);
    const __m256i low_ids = _mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(ids0), _mm256_castsi256_ps(ids1), second_wins));
    const __m256 lt = _mm256_cmp_ps(low, st->b1, _CMP_LT_OQ);
    st->b2 = _mm256_min_ps(_mm256_min_ps(st->b2, high), _mm256_max_ps(st->b1, low));
    st->bi = _mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(st->bi), _mm256_castsi256_ps(low_ids), lt));
    st->b1 = _mm256_min_ps(st->b1, low);
}

/* Fold a row's scores of tile t (codes t*16 .. +7 in s0, +8 .. +15 in s1) into its row_best: only a score below
 * the runner-up changes it, so two compares clear most tiles (as fold512 does; NaN never passes). */
__attribute__((target("avx2,fma"), always_inline)) static inline void fold_avx2(row_best *rb, __m256 s0, __m256 s1,
                                                                              Py_ssize_t t) {
    const __m256 limit = _mm256_set1_ps(rb->b2);
    const __m256 below = _mm256_or_ps(_mm256_cmp_ps(s0, limit, _CMP_LT_OQ), _mm256_cmp_ps(s1, limit, _CMP_LT_OQ));
    if (__builtin_expect(_mm256_testz_ps(below, below), 1)) return;
    float scores[LANES];
    _mm256_storeu_ps(scores, s0);
    _mm256_storeu_ps(scores + 8, s1);
    const uint32_t hits = (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(s0, limit, _CMP_LT_OQ)) |
                          (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(s1, limit, _CMP_LT_OQ)) << 8;
    fold_hits(rb, scores, hits, t);
}

/* Smallest of 8 floats / int32s, in every lane (three shuffle-min steps). */
__attribute__((target("avx2,fma"))) static inline __m256 hmin8_ps(__m256 v) {
    v = _mm256_min_ps(v, _mm256_permute2f128_ps(v, v, 1));
    v = _mm256_min_ps(v, _mm256_shuffle_ps(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm256_min_ps(v, _mm256_shuffle_ps(v, v, _MM_SHUFFLE(2, 3, 0, 1)));
}
__attribute__((target("avx2,fma"))) static inline __m256i hmin8_epi32(__m256i v) {
    v = _mm256_min_epi32(v, _mm256_permute2x128_si256(v, v, 1));
    v = _mm256_min_epi32(v, _mm256_shuffle_epi32(v, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm256_min_epi32(v, _mm256_shuffle_epi32(v, _MM_SHUFFLE(2, 3, 0, 1)));
}

/* Reduce one row's 8 lanes: smallest score (lowest code on equal scores) and the runner-up. In registers
 * (the scalar reduce_lanes, called from AVX code, paid branch misses and AVX-SSE transitions on every row);
 * a non-finite smallest score (NaN input, which the caller refuses) takes reduce_lanes. */
__attribute__((target("avx2,fma"))) static void finish_row(const lane_state *st, float *best,
                                                           int64_t *index, float *second) {
    const __m256 m = hmin8_ps(st->b1);
    const float low = _mm256_cvtss_f32(m);
    if (!isfinite(low)) {
        float b1[8], b2[8];
        int32_t bi[8];
        _mm256_storeu_ps(b1, st->b1);
        _mm256_storeu_ps(b2, st->b2);
        _mm256_storeu_si256((__m256i *)bi, st->bi);
        reduce_lanes(b1, b2, bi, 8, best, index, second);
        return;
    }
    const __m256i at_min = _mm256_castps_si256(_mm256_cmp_ps(st->b1, m, _CMP_EQ_OQ));
    /* lanes hold distinct codes, so the lowest code among the lanes at the minimum picks one lane */
    const __m256i code = hmin8_epi32(_mm256_blendv_epi8(_mm256_set1_epi32(INT32_MAX), st->bi, at_min));
    const __m256i winner = _mm256_and_si256(at_min, _mm256_cmpeq_epi32(st->bi, code));
    const __m256 others = _mm256_blendv_ps(st->b1, _mm256_set1_ps(INFINITY), _mm256_castsi256_ps(winner));
    *best = low;
    *index = _mm256_cvtsi256_si32(code);
    *second = _mm256_cvtss_f32(hmin8_ps(_mm256_min_ps(st->b2, others)));
}

/*
 * Cache blocking: a block of codes (about CODE_BLOCK_BYTES of the packed codebook) stays in L2 while
 * every row tile of a block of rows (about ROW_BLOCK_BYTES of x) passes over it; per-row lane states live in a
 * small buffer between code blocks.
 */
#ifndef CODE_BLOCK_BYTES
#define CODE_BLOCK_BYTES (256 * 1024)
#endif
#ifndef ROW_BLOCK_BYTES
#define ROW_BLOCK_BYTES (64 * 1024)
#endif
/* With scalar row states (row_best) a code block can stay in L1 beside the row tile when D is small: when two
 * tiles and a row tile fit in L1_FIT_BYTES (D <= 128), the SIMD paths take code blocks of L1_CODE_BLOCK_BYTES
 * and row blocks of L1_ROW_BLOCK_BYTES (the row tiles then come from L2); larger D keeps the L2 blocking above.
 * With fold512, against lane states in L2 blocks, real demo.fast5 rows on an AVX-512 Xeon (GFLOP/s, median of
 * 7): K-Means windows (D = 32) 73 -> 76 on one thread, 123 -> 143 on two; VQ-8192 latents (D = 64) 71 -> 88 and
 * 143 -> 164. */
#ifndef L1_FIT_BYTES
#define L1_FIT_BYTES (32 * 1024)
#endif
#ifndef L1_CODE_BLOCK_BYTES
#define L1_CODE_BLOCK_BYTES (16 * 1024)
#endif
#ifndef L1_ROW_BLOCK_BYTES
#define L1_ROW_BLOCK_BYTES (128 * 1024)
#endif

static inline int code_block_in_l1(Py_ssize_t dim, int row_tile) {
    return (2 * LANES + row_tile) * dim * (Py_ssize_t)sizeof(float) <= L1_FIT_BYTES;
}

/* Scores of ROWS rows (pointers xr) against code tile t, folded into the rows' states or (near != NULL) emitted
 * as near-tie candidates (whether near is NULL is a constant at each call). */
__attribute__((target("avx2,fma"), always_inline)) static inline void pass_avx2(
    const float *const *xr, const float *packed, const float *norms, Py_ssize_t t, Py_ssize_t dim, lane_state *st,
    row_best *rows_best, const near_tile *near, const int ONE_BLOCK) {
    const float *tile = packed + t * dim * LANES;
    __m256 acc[ROWS][2], part[ROWS][2];
    for (Py_ssize_t d0 = 0; d0 < dim; d0 += DIM_BLOCK) { /* ONE_BLOCK: once, acc = part (as in pass512) */
        const Py_ssize_t d1 = ONE_BLOCK || d0 + DIM_BLOCK >= dim ? dim : d0 + DIM_BLOCK;
        for (int r = 0; r < ROWS; r++) part[r][0] = part[r][1] = _mm256_setzero_ps();
        for (Py_ssize_t d = d0; d < d1; d++) {
            const __m256 c0 = _mm256_loadu_ps(tile + d * LANES);
            const __m256 c1 = _mm256_loadu_ps(tile + d * LANES + 8);
            for (int r = 0; r < ROWS; r++) {
                const __m256 v = _mm256_broadcast_ss(xr[r] + d);
                part[r][0] = _mm256_fmadd_ps(v, c0, part[r][0]);
                part[r][1] = _mm256_fmadd_ps(v, c1, part[r][1]);
            }
        }
        for (int r = 0; r < ROWS; r++) {
            acc[r][0] = ONE_BLOCK || d0 == 0 ? part[r][0] : _mm256_add_ps(acc[r][0], part[r][0]);
            acc[r][1] = ONE_BLOCK || d0 == 0 ? part[r][1] : _mm256_add_ps(acc[r][1], part[r][1]);
        }
        if (ONE_BLOCK) break;
    }
    const __m256 minus_two = _mm256_set1_ps(-2.0f);
    const __m256 n0 = _mm256_loadu_ps(norms + t * LANES);
    const __m256 n1 = _mm256_loadu_ps(norms + t * LANES + 8);
    if (near != NULL) {
        for (int r = 0; r < near->valid; r++) {
            const __m256 limit = _mm256_set1_ps(near->limits[r]);
            unsigned hit = (unsigned)_mm256_movemask_ps(
                               _mm256_cmp_ps(_mm256_fmadd_ps(minus_two, acc[r][0], n0), limit, _CMP_LE_OQ)) |
                           (unsigned)_mm256_movemask_ps(
                               _mm256_cmp_ps(_mm256_fmadd_ps(minus_two, acc[r][1], n1), limit, _CMP_LE_OQ)) << 8;
            while (hit) {
                emit_pair(near->sink, near->rows[r], t * LANES + __builtin_ctz(hit));
                hit &= hit - 1;
            }
        }
        return;
    }
    if (rows_best != NULL) { /* unrolled, so that the accumulators stay in registers */
#pragma GCC unroll 16
        for (int r = 0; r < ROWS; r++)
            fold_avx2(&rows_best[r], _mm256_fmadd_ps(minus_two, acc[r][0], n0),
                      _mm256_fmadd_ps(minus_two, acc[r][1], n1), t);
        return;
    }
    const __m256i base = _mm256_set1_epi32((int)(t * LANES));
    const __m256i ids0 = _mm256_add_epi32(base, _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256i ids1 = _mm256_add_epi32(base, _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15));
    for (int r = 0; r < ROWS; r++)
        update_state(&st[r], _mm256_fmadd_ps(minus_two, acc[r][0], n0), _mm256_fmadd_ps(minus_two, acc[r][1], n1),
                     ids0, ids1);
}

/* Near-tie candidates with the AVX2 passes: the selected rows in tiles of ROWS, every code of the codebook. */
__attribute__((target("avx2,fma"))) static int near_avx2(const float *x, const float *packed, const float *norms,
                                                        const int64_t *sel, const float *limits, Py_ssize_t count,
                                                        Py_ssize_t dim, Py_ssize_t codes, pair_sink *sink) {
    for (Py_ssize_t i0 = 0; i0 < count; i0 += ROWS) {
        const int valid = count - i0 < ROWS ? (int)(count - i0) : ROWS;
        const float *xr[ROWS];
        for (int r = 0; r < ROWS; r++) xr[r] = x + sel[i0 + (r < valid ? r : valid - 1)] * dim;
        const near_tile near = {sel + i0, limits + i0, valid, sink};
        for (Py_ssize_t t = 0; t < codes / LANES; t++) pass_avx2(xr, packed, norms, t, dim, NULL, NULL, &near, 0);
    }
    return 0;
}

__attribute__((target("avx2,fma"))) static int search_avx2(const float *x, const float *packed,
                                                           const float *norms, float *best,
                                                           int64_t *index, float *second,
                                                           Py_ssize_t rows, Py_ssize_t dim,
                                                           Py_ssize_t codes, Py_ssize_t row_start,
                                                           Py_ssize_t row_stop) {
    (void)rows;
    const Py_ssize_t tiles = codes / LANES;
    const Py_ssize_t tile_bytes = dim * LANES * (Py_ssize_t)sizeof(float);
    /* as search_avx512: scalar row states and L1 code blocks for small D, lane states in L2 blocks for large D */
    const int in_l1 = code_block_in_l1(dim, ROWS);
    Py_ssize_t tiles_per_block = (in_l1 ? L1_CODE_BLOCK_BYTES : CODE_BLOCK_BYTES) / tile_bytes;
    if (tiles_per_block < 1) tiles_per_block = 1;
    Py_ssize_t rows_per_block = (in_l1 ? L1_ROW_BLOCK_BYTES : ROW_BLOCK_BYTES) / (dim * (Py_ssize_t)sizeof(float))
                                / ROWS * ROWS;
    if (rows_per_block < ROWS) rows_per_block = ROWS;
    void *states = _mm_malloc((size_t)rows_per_block * (in_l1 ? sizeof(row_best) : sizeof(lane_state)), 32);
    if (states == NULL) return -1;
    row_best *scalar = states; /* the one of the two that in_l1 picks */
    lane_state *lanes = states;
    for (Py_ssize_t rb = row_start; rb < row_stop; rb += rows_per_block) {
        const Py_ssize_t rb_end = rb + rows_per_block < row_stop ? rb + rows_per_block : row_stop;
        /* rows_per_block is a multiple of ROWS, so a last partial tile's repeated rows stay inside */
        for (Py_ssize_t k = 0; k < rows_per_block; k++) {
            if (in_l1) {
                scalar[k].b1 = scalar[k].b2 = INFINITY;
                scalar[k].bi = 0;
            } else {
                lanes[k].b1 = _mm256_set1_ps(INFINITY);
                lanes[k].b2 = _mm256_set1_ps(INFINITY);
                lanes[k].bi = _mm256_setzero_si256();
            }
        }
        for (Py_ssize_t t0 = 0; t0 < tiles; t0 += tiles_per_block) {
            const Py_ssize_t t1 = t0 + tiles_per_block < tiles ? t0 + tiles_per_block : tiles;
            for (Py_ssize_t i0 = rb; i0 < rb_end; i0 += ROWS) {
                const float *xr[ROWS];
                row_best *sc = scalar + (i0 - rb);
                lane_state *st = lanes + (i0 - rb);
                for (int r = 0; r < ROWS; r++) xr[r] = x + (i0 + r < rb_end ? i0 + r : rb_end - 1) * dim;
                if (dim <= DIM_BLOCK)
                    for (Py_ssize_t t = t0; t < t1; t++) pass_avx2(xr, packed, norms, t, dim, NULL, sc, NULL, 1);
                else if (in_l1)
                    for (Py_ssize_t t = t0; t < t1; t++) pass_avx2(xr, packed, norms, t, dim, NULL, sc, NULL, 0);
                else
                    for (Py_ssize_t t = t0; t < t1; t++) pass_avx2(xr, packed, norms, t, dim, st, NULL, NULL, 0);
            }
        }
        for (Py_ssize_t i = rb; i < rb_end; i++) {
            if (in_l1)
                put_row_best(&scalar[i - rb], best + i, index + i, second + i);
            else
                finish_row(&lanes[i - rb], best + i, index + i, second + i);
        }
    }
    _mm_free(states);
    return 0;
}

/* ---------------------------------------------------------------- AVX-512 path
 *
 * One tile of 16 codes is one zmm vector per dimension (lane l = code l of the tile), so a pass takes two
 * adjacent code tiles (32 codes) against ROWS512 = 14 rows: 28 accumulators + 2 code vectors of the 32
 * zmm registers, the row values broadcast from memory inside the FMA. The rows of a tile are first copied
 * dimension-major ([D][ROWS512], the last tile repeating its last row) so that all 14 broadcasts of a
 * dimension address one pointer with constant offsets. Same blocked sums, same fp32 score |c|^2 - 2x.c
 * as the AVX2 path, so score_error_terms bounds both. */
#ifndef ROWS512
#define ROWS512 14
#endif

typedef struct {
    __m512 b1, b2;
    __m512i bi;
} state512;

/* Lane l of a row's state takes code t*16 + l, tiles in ascending order: a strictly smaller score replaces
 * the best (so the lower code wins on equal scores) and the displaced best, or the score itself, is a
 * runner-up candidate. */
__attribute__((target("avx512f"))) static inline void update512(state512 *st, __m512 s, __m512i ids) {
    const __mmask16 lt = _mm512_cmp_ps_mask(s, st->b1, _CMP_LT_OQ);
    st->b2 = _mm512_min_ps(st->b2, _mm512_max_ps(st->b1, s));
    st->bi = _mm512_mask_mov_epi32(st->bi, lt, ids);
    st->b1 = _mm512_min_ps(st->b1, s);
}

/* Fold a row's scores of tile t (s0) and, when NT == 2, tile t + 1 (s1) into its row_best. Only a score below
 * the runner-up changes the best or the runner-up, so one compare per tile against it clears most passes; the
 * scores that pass are folded one by one in ascending code order, exactly as search_generic folds them (a
 * strictly smaller score replaces the best, so the lower code wins on equal scores; NaN never passes). */
__attribute__((target("avx512f"), always_inline)) static inline void fold512(row_best *rb, __m512 s0, __m512 s1,
                                                                           Py_ssize_t t, const int NT) {
    const __m512 limit = _mm512_set1_ps(rb->b2);
    const __mmask16 rest0 = _mm512_cmp_ps_mask(s0, limit, _CMP_NLT_UQ);
    const __mmask16 rest = NT == 2 ? _mm512_mask_cmp_ps_mask(rest0, s1, limit, _CMP_NLT_UQ) : rest0;
    if (__builtin_expect(rest == 0xFFFF, 1)) return;
    float scores[2 * LANES];
    _mm512_storeu_ps(scores, s0);
    uint32_t hits = (uint16_t)~rest0;
    if (NT == 2) {
        _mm512_storeu_ps(scores + LANES, s1);
        hits |= (uint32_t)_mm512_cmp_ps_mask(s1, limit, _CMP_LT_OQ) << LANES;
    }
    fold_hits(rb, scores, hits, t); /* a pass's two tiles are adjacent: bit 16 + l is code (t + 1) * LANES + l */
}

/* Reduce one row's 16 lanes: smallest score (lowest code on equal scores) and the runner-up, in registers as
 * finish_row does (a non-finite smallest score takes reduce_lanes). */
__attribute__((target("avx512f"))) static void finish512(const state512 *st, float *best, int64_t *index,
                                                        float *second) {
    const float low = _mm512_reduce_min_ps(st->b1);
    if (!isfinite(low)) {
        float b1[16], b2[16];
        int32_t bi[16];
        _mm512_storeu_ps(b1, st->b1);
        _mm512_storeu_ps(b2, st->b2);
        _mm512_storeu_si512((void *)bi, st->bi);
        reduce_lanes(b1, b2, bi, 16, best, index, second);
        return;
    }
    const __mmask16 at_min = _mm512_cmp_ps_mask(st->b1, _mm512_set1_ps(low), _CMP_EQ_OQ);
    /* lanes hold distinct codes, so the lowest code among the lanes at the minimum picks one lane */
    const int code = _mm512_mask_reduce_min_epi32(at_min, st->bi);
    const __mmask16 winner = _mm512_mask_cmpeq_epi32_mask(at_min, st->bi, _mm512_set1_epi32(code));
    const __m512 others = _mm512_mask_mov_ps(st->b1, winner, _mm512_set1_ps(INFINITY));
    *best = low;
    *index = code;
    *second = _mm512_reduce_min_ps(_mm512_min_ps(st->b2, others));
}

/* Scores of ROWS512 rows (xt: [dim][ROWS512]) against NT (1 or 2) code tiles starting at tile t, folded
 * into the rows' states, or (near != NULL) emitted as near-tie candidates. NT and whether near is NULL are
 * constants at each call, so each variant compiles to its own loop. */
__attribute__((target("avx512f"), always_inline)) static inline void pass512(
    const float *xt, const float *packed, const float *norms, Py_ssize_t t, Py_ssize_t dim, state512 *st,
    row_best *rows_best, const int NT, const near_tile *near, const int ONE_BLOCK) {
    const float *tile0 = packed + t * dim * LANES, *tile1 = tile0 + dim * LANES;
    __m512 acc[ROWS512][2], part[ROWS512][2];
    /* ONE_BLOCK (a constant: dim <= DIM_BLOCK) runs the loop once and lets acc be part, so the compiler keeps
     * the 28 accumulators in registers instead of the block sums beside them on the stack */
    for (Py_ssize_t d0 = 0; d0 < dim; d0 += DIM_BLOCK) {
        const Py_ssize_t d1 = ONE_BLOCK || d0 + DIM_BLOCK >= dim ? dim : d0 + DIM_BLOCK;
        for (int r = 0; r < ROWS512; r++) part[r][0] = part[r][1] = _mm512_setzero_ps();
        for (Py_ssize_t d = d0; d < d1; d++) {
            const float *xd = xt + d * ROWS512;
            const __m512 c0 = _mm512_loadu_ps(tile0 + d * LANES);
            const __m512 c1 = NT == 2 ? _mm512_loadu_ps(tile1 + d * LANES) : c0;
            for (int r = 0; r < ROWS512; r++) {
                const __m512 v = _mm512_set1_ps(xd[r]);
                part[r][0] = _mm512_fmadd_ps(v, c0, part[r][0]);
                if (NT == 2) part[r][1] = _mm512_fmadd_ps(v, c1, part[r][1]);
            }
        }
        for (int r = 0; r < ROWS512; r++) {
            acc[r][0] = ONE_BLOCK || d0 == 0 ? part[r][0] : _mm512_add_ps(acc[r][0], part[r][0]);
            if (NT == 2) acc[r][1] = ONE_BLOCK || d0 == 0 ? part[r][1] : _mm512_add_ps(acc[r][1], part[r][1]);
        }
        if (ONE_BLOCK) break;
    }
    const __m512 minus_two = _mm512_set1_ps(-2.0f);
    const __m512i ids0 = _mm512_add_epi32(_mm512_set1_epi32((int)(t * LANES)),
                                          _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    const __m512 n0 = _mm512_loadu_ps(norms + t * LANES);
    if (near != NULL) { /* near-tie candidates: codes whose score is <= the row's limit */
        for (int j = 0; j < NT; j++) {
            const __m512 n = j ? _mm512_loadu_ps(norms + (t + 1) * LANES) : n0;
            for (int r = 0; r < near->valid; r++) {
                __mmask16 hit = _mm512_cmp_ps_mask(_mm512_fmadd_ps(minus_two, acc[r][j], n),
                                                   _mm512_set1_ps(near->limits[r]), _CMP_LE_OQ);
                while (hit) {
                    emit_pair(near->sink, near->rows[r], (t + j) * LANES + __builtin_ctz(hit));
                    hit &= hit - 1;
                }
            }
        }
        return;
    }
    if (rows_best != NULL) {
        const __m512 n1 = NT == 2 ? _mm512_loadu_ps(norms + (t + 1) * LANES) : n0;
        /* unrolled, so that the accumulators stay in their registers (a rolled loop indexes them on the stack) */
#pragma GCC unroll 32
        for (int r = 0; r < ROWS512; r++)
            fold512(&rows_best[r], _mm512_fmadd_ps(minus_two, acc[r][0], n0),
                    NT == 2 ? _mm512_fmadd_ps(minus_two, acc[r][1], n1) : n0, t, NT);
        return;
    }
    for (int r = 0; r < ROWS512; r++) update512(&st[r], _mm512_fmadd_ps(minus_two, acc[r][0], n0), ids0);
    if (NT == 2) {
        const __m512i ids1 = _mm512_add_epi32(ids0, _mm512_set1_epi32(LANES));
        const __m512 n1 = _mm512_loadu_ps(norms + (t + 1) * LANES);
        for (int r = 0; r < ROWS512; r++) update512(&st[r], _mm512_fmadd_ps(minus_two, acc[r][1], n1), ids1);
    }
}

__attribute__((target("avx512f"))) static int search_avx512(const float *x, const float *packed,
                                                           const float *norms, float *best,
                                                           int64_t *index, float *second,
                                                           Py_ssize_t rows, Py_ssize_t dim,
                                                           Py_ssize_t codes, Py_ssize_t row_start,
                                                           Py_ssize_t row_stop) {
    (void)rows;
    const Py_ssize_t tiles = codes / LANES;
    const Py_ssize_t tile_bytes = dim * LANES * (Py_ssize_t)sizeof(float);
    /* small D (always when dim <= DIM_BLOCK): scalar row states folded by fold512 and code blocks in L1; large
     * D: lane states folded branch-free by update512 in L2 code blocks (with RVQ's 1024 codes a row has only 32
     * passes, so fold512's branch is often taken and mispredicted: 5 % slower there) */
    const int in_l1 = code_block_in_l1(dim, ROWS512);
    /* an even number of tiles per code block, so that passes of two tiles do not straddle blocks */
    Py_ssize_t tiles_per_block = (in_l1 ? L1_CODE_BLOCK_BYTES : CODE_BLOCK_BYTES) / tile_bytes / 2 * 2;
    if (tiles_per_block < 2) tiles_per_block = 2;
    Py_ssize_t rows_per_block = (in_l1 ? L1_ROW_BLOCK_BYTES : ROW_BLOCK_BYTES) / (dim * (Py_ssize_t)sizeof(float))
                                / ROWS512 * ROWS512;
    if (rows_per_block < ROWS512) rows_per_block = ROWS512;
    void *states = _mm_malloc((size_t)rows_per_block * (in_l1 ? sizeof(row_best) : sizeof(state512)), 64);
    float *xt = _mm_malloc((size_t)rows_per_block * (size_t)dim * sizeof(float), 64);
    if (states == NULL || xt == NULL) {
        _mm_free(states);
        _mm_free(xt);
        return -1;
    }
    row_best *scalar = states; /* the one of the two that in_l1 picks */
    state512 *lanes = states;
    for (Py_ssize_t rb = row_start; rb < row_stop; rb += rows_per_block) {
        const Py_ssize_t rb_end = rb + rows_per_block < row_stop ? rb + rows_per_block : row_stop;
        for (Py_ssize_t i0 = rb; i0 < rb_end; i0 += ROWS512) { /* row tiles, dimension-major */
            float *dst = xt + (i0 - rb) * dim;
            for (int r = 0; r < ROWS512; r++) {
                const float *src = x + (i0 + r < rb_end ? i0 + r : rb_end - 1) * dim;
                for (Py_ssize_t d = 0; d < dim; d++) dst[d * ROWS512 + r] = src[d];
            }
        }
        for (Py_ssize_t k = 0; k < rows_per_block; k++) {
            if (in_l1) {
                scalar[k].b1 = scalar[k].b2 = INFINITY;
                scalar[k].bi = 0;
            } else {
                lanes[k].b1 = lanes[k].b2 = _mm512_set1_ps(INFINITY);
                lanes[k].bi = _mm512_setzero_si512();
            }
        }
        for (Py_ssize_t t0 = 0; t0 < tiles; t0 += tiles_per_block) {
            const Py_ssize_t t1 = t0 + tiles_per_block < tiles ? t0 + tiles_per_block : tiles;
            for (Py_ssize_t i0 = rb; i0 < rb_end; i0 += ROWS512) {
                const float *xr = xt + (i0 - rb) * dim;
                row_best *sc = scalar + (i0 - rb);
                state512 *st = lanes + (i0 - rb);
                Py_ssize_t t = t0;
                if (dim <= DIM_BLOCK) { /* its own compiled loop: no block sums to keep beside the accumulators */
                    for (; t + 2 <= t1; t += 2) pass512(xr, packed, norms, t, dim, NULL, sc, 2, NULL, 1);
                    if (t < t1) pass512(xr, packed, norms, t, dim, NULL, sc, 1, NULL, 1);
                } else if (in_l1) {
                    for (; t + 2 <= t1; t += 2) pass512(xr, packed, norms, t, dim, NULL, sc, 2, NULL, 0);
                    if (t < t1) pass512(xr, packed, norms, t, dim, NULL, sc, 1, NULL, 0);
                } else {
                    for (; t + 2 <= t1; t += 2) pass512(xr, packed, norms, t, dim, st, NULL, 2, NULL, 0);
                    if (t < t1) pass512(xr, packed, norms, t, dim, st, NULL, 1, NULL, 0);
                }
            }
        }
        for (Py_ssize_t i = rb; i < rb_end; i++) {
            if (in_l1)
                put_row_best(&scalar[i - rb], best + i, index + i, second + i);
            else
                finish512(&lanes[i - rb], best + i, index + i, second + i);
        }
    }
    _mm_free(states);
    _mm_free(xt);
    return 0;
}

/* FMA throughput probes for the bench (nst_hf.bench.fma_peak_gflops): 12 independent chains of
 * a = a * m + c per iteration, enough to fill two FMA pipes of latency 4-6; returns the FMAs' FLOPs. */
#define CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
__attribute__((target("avx2,fma"))) static double fma_loop8(long iterations, float *sink) {
    const __m256 m = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(0.001f);
#define INIT8(i) __m256 a##i = _mm256_set1_ps((float)(i));
#define STEP8(i) a##i = _mm256_fmadd_ps(a##i, m, c);
#define SUM8(i) s = _mm256_add_ps(s, a##i);
    CHAINS(INIT8)
    for (long k = 0; k < iterations; k++) { CHAINS(STEP8) }
    __m256 s = _mm256_setzero_ps();
    CHAINS(SUM8)
    float out[8];
    _mm256_storeu_ps(out, s);
    *sink = out[0];
    return 2.0 * 8 * 12 * (double)iterations;
}
__attribute__((target("avx512f"))) static double fma_loop16(long iterations, float *sink) {
    const __m512 m = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(0.001f);
#define INIT16(i) __m512 a##i = _mm512_set1_ps((float)(i));
#define STEP16(i) a##i = _mm512_fmadd_ps(a##i, m, c);
#define SUM16(i) s = _mm512_add_ps(s, a##i);
    CHAINS(INIT16)
    for (long k = 0; k < iterations; k++) { CHAINS(STEP16) }
    __m512 s = _mm512_setzero_ps();
    CHAINS(SUM16)
    *sink = _mm512_reduce_add_ps(s);
    return 2.0 * 16 * 12 * (double)iterations;
}

/* Near-tie candidates with the AVX-512 passes: the selected rows in tiles of ROWS512 (dimension-major), every
 * code of the codebook, scores computed exactly as search_avx512 computes them. */
__attribute__((target("avx512f"))) static int near_avx512(const float *x, const float *packed, const float *norms,
                                                         const int64_t *sel, const float *limits, Py_ssize_t count,
                                                         Py_ssize_t dim, Py_ssize_t codes, pair_sink *sink) {
    const Py_ssize_t tiles = codes / LANES;
    float *xt = _mm_malloc((size_t)ROWS512 * (size_t)dim * sizeof(float), 64);
    if (xt == NULL) return -1;
    for (Py_ssize_t i0 = 0; i0 < count; i0 += ROWS512) {
        const int valid = count - i0 < ROWS512 ? (int)(count - i0) : ROWS512;
        for (int r = 0; r < ROWS512; r++) {
            const float *src = x + sel[i0 + (r < valid ? r : valid - 1)] * dim;
            for (Py_ssize_t d = 0; d < dim; d++) xt[d * ROWS512 + r] = src[d];
        }
        const near_tile near = {sel + i0, limits + i0, valid, sink};
        Py_ssize_t t = 0;
        for (; t + 2 <= tiles; t += 2) pass512(xt, packed, norms, t, dim, NULL, NULL, 2, &near, 0);
        if (t < tiles) pass512(xt, packed, norms, t, dim, NULL, NULL, 1, &near, 0);
    }
    _mm_free(xt);
    return 0;
}

/* ---------------------------------------------------------------- exact search that skips codes (AVX-512)
 *
 * The codebook is packed in groups of contiguous tiles (codes sorted by cluster in Python), each with a centre
 * and radius; lb[i * groups + g] is a float64-safe lower bound, rounded down to fp32, on the squared distance
 * from row i to any code of group g (triangle inequality: max(0, |x - centre| - radius)^2). A row tile visits
 * the groups by increasing bound and skips a group when, for every row, the bound exceeds the row's best
 * squared distance so far plus twice the fp32 error bound at that distance (near_margin): a skipped code is
 * then strictly farther than the final winner even after rounding, so it can be neither the winner nor a near
 * tie. The reported runner-up is over the visited codes; the caller's near-tie check rescans all codes. */

/* fp32_distance_error_bound of nst_hf.quantizers.nearest, for one row (gamma from Python). */
static double near_margin(double x_norm, double distance, double gamma) {
    double d = distance > 0 ? distance : 0;
    double c = x_norm + sqrt(d);
    d = d + 2.0 * gamma * (c * c + 2.0 * x_norm * c);
    c = x_norm + sqrt(d);
    return 2.002 * gamma * (c * c + 2.0 * x_norm * c) + 1e-30;
}

__attribute__((target("avx512f"))) static int search_pruned_avx512(
    const float *x, const float *packed, const float *norms, const float *lb, const int64_t *group_tiles,
    const double *x_sq, const int64_t *perm, double gamma, float *best, int64_t *index, float *second,
    Py_ssize_t dim, Py_ssize_t groups, Py_ssize_t row_start, Py_ssize_t row_stop, int64_t *visited) {
    float *xt = _mm_malloc((size_t)ROWS512 * (size_t)dim * sizeof(float), 64);
    state512 *st = _mm_malloc(ROWS512 * sizeof(state512), 64);
    Py_ssize_t *order = malloc((size_t)groups * sizeof(Py_ssize_t));
    float *key = malloc((size_t)groups * sizeof(float));
    if (xt == NULL || st == NULL || order == NULL || key == NULL) {
        _mm_free(xt);
        _mm_free(st);
        free(order);
        free(key);
        return -1;
    }
    int64_t tiles_done = 0;
    for (Py_ssize_t i0 = row_start; i0 < row_stop; i0 += ROWS512) {
        const int valid = row_stop - i0 < ROWS512 ? (int)(row_stop - i0) : ROWS512;
        for (int r = 0; r < ROWS512; r++) {
            const float *src = x + perm[i0 + (r < valid ? r : valid - 1)] * dim;
            for (Py_ssize_t d = 0; d < dim; d++) xt[d * ROWS512 + r] = src[d];
            st[r].b1 = st[r].b2 = _mm512_set1_ps(INFINITY);
            st[r].bi = _mm512_setzero_si512();
        }
        /* groups by increasing smallest bound over the tile's rows (insertion sort: groups is ~100) */
        for (Py_ssize_t g = 0; g < groups; g++) {
            float k = INFINITY;
            for (int r = 0; r < valid; r++) k = fminf(k, lb[perm[i0 + r] * groups + g]);
            Py_ssize_t j = g;
            while (j > 0 && key[j - 1] > k) {
                key[j] = key[j - 1];
                order[j] = order[j - 1];
                j--;
            }
            key[j] = k;
            order[j] = g;
        }
        double cutoff[ROWS512];
        for (int r = 0; r < ROWS512; r++) cutoff[r] = INFINITY;
        for (Py_ssize_t k = 0; k < groups; k++) {
            const Py_ssize_t g = order[k];
            int needed = 0;
            for (int r = 0; r < valid && !needed; r++) needed = !((double)lb[perm[i0 + r] * groups + g] > cutoff[r]);
            if (!needed) continue;
            Py_ssize_t t = group_tiles[g];
            for (; t + 2 <= group_tiles[g + 1]; t += 2) pass512(xt, packed, norms, t, dim, st, NULL, 2, NULL, 0);
            if (t < group_tiles[g + 1]) pass512(xt, packed, norms, t, dim, st, NULL, 1, NULL, 0);
            tiles_done += group_tiles[g + 1] - group_tiles[g];
            for (int r = 0; r < valid; r++) {
                const double row_sq = x_sq[perm[i0 + r]];
                const double distance = (double)_mm512_reduce_min_ps(st[r].b1) + row_sq;
                cutoff[r] = distance + 2.0 * near_margin(sqrt(row_sq), distance, gamma);
            }
        }
        for (int r = 0; r < valid; r++) {
            const int64_t i = perm[i0 + r];
            finish512(&st[r], best + i, index + i, second + i);
        }
    }
    *visited += tiles_done;
    _mm_free(xt);
    _mm_free(st);
    free(order);
    free(key);
    return 0;
}

#define BOUND_BLOCKS 4
#define BOUND_ROWS 6
/* The pruned search's bounds for rows [start, stop) of x: lb[i * groups + g] <= the squared distance from row i to
 * every code of group g, as fp32 rounded down; nearest[i] the group whose centre is nearest by the same estimate
 * (the lowest on ties: it only orders the rows); x_sq[i] = |x_i|^2 in float64. centres_t is [dim][padded_groups]
 * (padded_groups a multiple of 8), centre_sq and radius (rounded outward) [padded_groups].
 *
 * Eight groups per vector, BOUND_BLOCKS vectors of BOUND_ROWS rows at once: |x - m|^2 = |x|^2 + |m|^2 - 2 x.m in float64 (one FMA per
 * term). Its rounding is at most (2 dim + 6) u (|x|^2 + |m|^2) (u = 2^-53; |x.m| <= (|x|^2 + |m|^2) / 2), which
 * the subtracted (dim + 8) 2^-50 (|x|^2 + |m|^2) covers four times; each later step (sqrt, the radius, the square)
 * is lowered by 2^-50 relative, four times its rounding, and the fp32 conversion (round to nearest, 2^-24
 * relative) by 2^-22. */
__attribute__((target("avx512f"))) static void group_bounds_avx512(const float *x, const double *centres_t,
                                                                  const double *centre_sq, const double *radius,
                                                                  Py_ssize_t dim, Py_ssize_t groups,
                                                                  Py_ssize_t padded_groups, Py_ssize_t start,
                                                                  Py_ssize_t stop, float *lb, int64_t *nearest,
                                                                  double *x_sq) {
    const __m512d slack = _mm512_set1_pd((double)(dim + 8) * 0x1p-50);
    const __m512d lower = _mm512_set1_pd(1.0 - 0x1p-50), to_fp32 = _mm512_set1_pd(1.0 - 0x1p-22);
    const __m512d zero = _mm512_setzero_pd(), minus_two = _mm512_set1_pd(-2.0);
    for (Py_ssize_t i0 = start; i0 < stop; i0 += BOUND_ROWS) {
        /* BOUND_ROWS rows share each load of the centres (the centres of ~128 groups outgrow L1) */
        const int valid_rows = stop - i0 < BOUND_ROWS ? (int)(stop - i0) : BOUND_ROWS;
        const float *xr[BOUND_ROWS];
        __m512d row_sq[BOUND_ROWS];
        double closest[BOUND_ROWS];
        int64_t closest_group[BOUND_ROWS];
        for (int r = 0; r < BOUND_ROWS; r++) {
            xr[r] = x + (i0 + (r < valid_rows ? r : valid_rows - 1)) * dim;
            double sq = 0.0;
            for (Py_ssize_t d = 0; d < dim; d++) sq += (double)xr[r][d] * (double)xr[r][d];
            if (r < valid_rows) x_sq[i0 + r] = sq;
            row_sq[r] = _mm512_set1_pd(sq);
            closest[r] = INFINITY;
            closest_group[r] = 0;
        }
        for (Py_ssize_t g0 = 0; g0 < padded_groups; g0 += 8 * BOUND_BLOCKS) {
            const int blocks = (padded_groups - g0) / 8 < BOUND_BLOCKS ? (int)((padded_groups - g0) / 8) : BOUND_BLOCKS;
            __m512d dot[BOUND_ROWS][BOUND_BLOCKS];
            for (int r = 0; r < BOUND_ROWS; r++)
                for (int b = 0; b < BOUND_BLOCKS; b++) dot[r][b] = zero;
            for (Py_ssize_t d = 0; d < dim; d++) {
                const double *row = centres_t + d * padded_groups + g0;
                __m512d m[BOUND_BLOCKS];
                for (int b = 0; b < BOUND_BLOCKS; b++) m[b] = b < blocks ? _mm512_loadu_pd(row + 8 * b) : zero;
                for (int r = 0; r < BOUND_ROWS; r++) {
                    const __m512d xd = _mm512_set1_pd((double)xr[r][d]);
                    for (int b = 0; b < BOUND_BLOCKS; b++) dot[r][b] = _mm512_fmadd_pd(xd, m[b], dot[r][b]);
                }
            }
            for (int r = 0; r < valid_rows; r++)
                for (int b = 0; b < blocks; b++) {
                    const Py_ssize_t gb = g0 + 8 * b;
                    const int valid = groups - gb < 8 ? (int)(groups - gb) : 8;
                    if (valid <= 0) break;
                    const __m512d norms = _mm512_add_pd(row_sq[r], _mm512_loadu_pd(centre_sq + gb));
                    __m512d d2 = _mm512_fmadd_pd(minus_two, dot[r][b], norms);
                    double estimate[8];
                    _mm512_storeu_pd(estimate, d2);
                    for (int l = 0; l < valid; l++)
                        if (estimate[l] < closest[r]) {
                            closest[r] = estimate[l];
                            closest_group[r] = gb + l;
                        }
                    d2 = _mm512_max_pd(_mm512_sub_pd(d2, _mm512_mul_pd(slack, norms)), zero);
                    __m512d gap = _mm512_mul_pd(_mm512_sqrt_pd(d2), lower);
                    gap = _mm512_max_pd(_mm512_mul_pd(_mm512_sub_pd(gap, _mm512_loadu_pd(radius + gb)), lower), zero);
                    const __m256 bound =
                        _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_mul_pd(_mm512_mul_pd(gap, gap), lower), to_fp32));
                    float out[8];
                    _mm256_storeu_ps(out, bound);
                    memcpy(lb + (i0 + r) * groups + gb, out, (size_t)valid * sizeof(float));
                }
        }
        for (int r = 0; r < valid_rows; r++) nearest[i0 + r] = closest_group[r];
    }
}

static int cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
static int cpu_has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}
#define HAVE_X86_PATHS 1
#endif

/* The code paths, fastest first; a path is usable when this build has it and the CPU supports it. */
typedef struct {
    const char *name;
    search_fn fn;
    near_fn near; /* the near-tie candidate scan that goes with it */
    int row_tile;
    int (*usable)(void);
} search_path;

static int always(void) { return 1; }

static const search_path paths[] = {
#ifdef HAVE_X86_PATHS
    {"avx512", search_avx512, near_avx512, ROWS512, cpu_has_avx512},
    {"avx2", search_avx2, near_avx2, ROWS, cpu_has_avx2},
#endif
    {"generic", search_generic, near_generic, 1, always},
};
#define NUM_PATHS ((int)(sizeof(paths) / sizeof(paths[0])))

/* The usable path called name, or NULL (with ValueError set). */
static const search_path *find_path(const char *name) {
    for (int p = 0; p < NUM_PATHS; p++)
        if (strcmp(paths[p].name, name) == 0) {
            if (paths[p].usable()) return &paths[p];
            break;
        }
    PyErr_Format(PyExc_ValueError, "nearest_two: kernel %s is not usable on this CPU or build; "
                 "see nst_hf.quantizers.fused.supported_kernels()", name);
    return NULL;
}



static int check_buffer(Py_buffer *view, Py_ssize_t items, Py_ssize_t itemsize, const char *name) {
    if (view->len < items * itemsize || view->itemsize != itemsize ||
        !PyBuffer_IsContiguous(view, 'C')) {
        PyErr_Format(PyExc_ValueError,
                     "%s must be a C-contiguous buffer of at least %zd items of %zd bytes", name,
                     items, itemsize);
        return 0;
    }
    return 1;
}

static PyObject *nearest_two(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer xv, pv, nv, bv, iv, sv;
    Py_ssize_t rows, dim, codes, start, stop;
    const char *kernel;
    if (!PyArg_ParseTuple(args, "y*y*y*w*w*w*nnnnns", &xv, &pv, &nv, &bv, &iv, &sv, &rows, &dim,
                          &codes, &start, &stop, &kernel))
        return NULL;
    PyObject *result = NULL;
    const search_path *path = find_path(kernel);
    if (path == NULL) goto done;
    if (dim <= 0 || codes <= 0 || codes % LANES != 0 || start < 0 || stop > rows || start > stop) {
        PyErr_SetString(PyExc_ValueError,
                        "nearest_two: need dim > 0, codes a positive multiple of 16 and "
                        "0 <= start <= stop <= rows");
        goto done;
    }
    if (!check_buffer(&xv, rows * dim, 4, "x") || !check_buffer(&pv, codes * dim, 4, "packed") ||
        !check_buffer(&nv, codes, 4, "norms") || !check_buffer(&bv, rows, 4, "best") ||
        !check_buffer(&iv, rows, 8, "index") || !check_buffer(&sv, rows, 4, "second"))
        goto done;
    int status;
    Py_BEGIN_ALLOW_THREADS status = path->fn((const float *)xv.buf, (const float *)pv.buf,
                                                  (const float *)nv.buf, (float *)bv.buf,
                                                  (int64_t *)iv.buf, (float *)sv.buf, rows, dim,
                                                  codes, start, stop);
    Py_END_ALLOW_THREADS if (status != 0) {
        PyErr_NoMemory();
        goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&xv);
    PyBuffer_Release(&pv);
    PyBuffer_Release(&nv);
    PyBuffer_Release(&bv);
    PyBuffer_Release(&iv);
    PyBuffer_Release(&sv);
    return result;
}

/* near_codes(x, packed, norms, sel, limits, out_rows, out_codes, rows, dim, codes, count, cap, kernel) -> pairs:
 * every (sel[i], code) whose fp32 score (computed as the kernel's search computes it) is <= limits[i]; the first
 * cap pairs are written, the total is returned (call again with a larger buffer when it exceeds cap). */
static PyObject *near_codes(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer xv, pv, nv, sv, lv, rv, cv;
    Py_ssize_t rows, dim, codes, count, cap;
    const char *kernel;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*w*w*nnnnns", &xv, &pv, &nv, &sv, &lv, &rv, &cv, &rows, &dim, &codes,
                          &count, &cap, &kernel))
        return NULL;
    PyObject *result = NULL;
    const search_path *path = find_path(kernel);
    if (path == NULL) goto done;
    if (dim <= 0 || codes <= 0 || codes % LANES != 0 || count < 0 || cap < 0) {
        PyErr_SetString(PyExc_ValueError, "near_codes: need dim > 0, codes a positive multiple of 16, counts >= 0");
        goto done;
    }
    if (!check_buffer(&xv, rows * dim, 4, "x") || !check_buffer(&pv, codes * dim, 4, "packed") ||
        !check_buffer(&nv, codes, 4, "norms") || !check_buffer(&sv, count, 8, "rows") ||
        !check_buffer(&lv, count, 4, "limits") || !check_buffer(&rv, cap, 8, "out_rows") ||
        !check_buffer(&cv, cap, 8, "out_codes"))
        goto done;
    const int64_t *sel = (const int64_t *)sv.buf;
    for (Py_ssize_t i = 0; i < count; i++)
        if (sel[i] < 0 || sel[i] >= rows) {
            PyErr_SetString(PyExc_IndexError, "near_codes: a row index is out of range");
            goto done;
        }
    pair_sink sink = {(int64_t *)rv.buf, (int64_t *)cv.buf, 0, cap};
    int status;
    Py_BEGIN_ALLOW_THREADS status = path->near((const float *)xv.buf, (const float *)pv.buf, (const float *)nv.buf,
                                               sel, (const float *)lv.buf, count, dim, codes, &sink);
    Py_END_ALLOW_THREADS if (status != 0) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyLong_FromSsize_t(sink.count);
done:
    PyBuffer_Release(&xv);
    PyBuffer_Release(&pv);
    PyBuffer_Release(&nv);
    PyBuffer_Release(&sv);
    PyBuffer_Release(&lv);
    PyBuffer_Release(&rv);
    PyBuffer_Release(&cv);
    return result;
}

/* out[i] = |x[rows[i]] - codebook[codes[i]]|^2 in double: the squares of dimensions d = j (mod 4) are added in
 * order into partial sum j, then (s0 + s1) + (s2 + s3); one rounding per operation (no FMA), the same
 * operations as the NumPy fallback in nearest.py. Four chains instead of one: 4x less add latency. */
static int pair_distances(const float *x, const float *codebook, const int64_t *rows, const int64_t *codes,
                          double *out, Py_ssize_t pairs, Py_ssize_t dim, Py_ssize_t num_rows,
                          Py_ssize_t num_codes) {
    for (Py_ssize_t i = 0; i < pairs; i++)
        if (rows[i] < 0 || rows[i] >= num_rows || codes[i] < 0 || codes[i] >= num_codes) return -1;
    for (Py_ssize_t i = 0; i < pairs; i++) {
        const float *a = x + rows[i] * dim, *b = codebook + codes[i] * dim;
        double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, t0, t1, t2, t3;
        Py_ssize_t d = 0;
        for (; d + 4 <= dim; d += 4) {
            t0 = (double)a[d] - (double)b[d];
            t1 = (double)a[d + 1] - (double)b[d + 1];
            t2 = (double)a[d + 2] - (double)b[d + 2];
            t3 = (double)a[d + 3] - (double)b[d + 3];
            s0 = s0 + t0 * t0;
            s1 = s1 + t1 * t1;
            s2 = s2 + t2 * t2;
            s3 = s3 + t3 * t3;
        }
        if (d < dim) t0 = (double)a[d] - (double)b[d], s0 = s0 + t0 * t0;
        if (d + 1 < dim) t1 = (double)a[d + 1] - (double)b[d + 1], s1 = s1 + t1 * t1;
        if (d + 2 < dim) t2 = (double)a[d + 2] - (double)b[d + 2], s2 = s2 + t2 * t2;
        out[i] = (s0 + s1) + (s2 + s3);
    }
    return 0;
}

static PyObject *py_pair_distances(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer xv, cv, rv, kv, ov;
    Py_ssize_t num_rows, num_codes, dim, pairs;
    if (!PyArg_ParseTuple(args, "y*y*y*y*w*nnnn", &xv, &cv, &rv, &kv, &ov, &num_rows, &num_codes, &dim, &pairs))
        return NULL;
    PyObject *result = NULL;
    if (dim <= 0 || num_rows < 0 || num_codes < 0 || pairs < 0) {
        PyErr_SetString(PyExc_ValueError, "pair_distances: need dim > 0 and non-negative counts");
        goto done;
    }
    if (!check_buffer(&xv, num_rows * dim, 4, "x") || !check_buffer(&cv, num_codes * dim, 4, "codebook") ||
        !check_buffer(&rv, pairs, 8, "rows") || !check_buffer(&kv, pairs, 8, "codes") ||
        !check_buffer(&ov, pairs, 8, "out"))
        goto done;
    int status;
    Py_BEGIN_ALLOW_THREADS status = pair_distances((const float *)xv.buf, (const float *)cv.buf,
                                                   (const int64_t *)rv.buf, (const int64_t *)kv.buf,
                                                   (double *)ov.buf, pairs, dim, num_rows, num_codes);
    Py_END_ALLOW_THREADS if (status != 0) {
        PyErr_SetString(PyExc_IndexError, "pair_distances: a row or code index is out of range");
        goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&xv);
    PyBuffer_Release(&cv);
    PyBuffer_Release(&rv);
    PyBuffer_Release(&kv);
    PyBuffer_Release(&ov);
    return result;
}

/* nearest_two_pruned(x, packed, norms, lb, group_tiles, x_sq, gamma, best, index, second, rows, dim, codes,
 * groups, start, stop) -> tiles visited (AVX-512 only; see search_pruned_avx512). */
static PyObject *nearest_two_pruned(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer xv, pv, nv, lv, gv, qv, ov, bv, iv, sv;
    Py_ssize_t rows, dim, codes, groups, start, stop;
    double gamma;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*dw*w*w*nnnnnn", &xv, &pv, &nv, &lv, &gv, &qv, &ov, &gamma, &bv, &iv,
                          &sv, &rows, &dim, &codes, &groups, &start, &stop))
        return NULL;
    PyObject *result = NULL;
    int64_t visited = 0;
#ifdef HAVE_X86_PATHS
    const int usable = cpu_has_avx512();
#else
    const int usable = 0;
#endif
    if (!usable) {
        PyErr_SetString(PyExc_ValueError, "nearest_two_pruned: needs the avx512 path, which this CPU or build lacks");
        goto done;
    }
    if (dim <= 0 || codes <= 0 || codes % LANES != 0 || groups <= 0 || start < 0 || stop > rows || start > stop) {
        PyErr_SetString(PyExc_ValueError, "nearest_two_pruned: bad sizes");
        goto done;
    }
    if (!check_buffer(&xv, rows * dim, 4, "x") || !check_buffer(&pv, codes * dim, 4, "packed") ||
        !check_buffer(&nv, codes, 4, "norms") || !check_buffer(&lv, rows * groups, 4, "lb") ||
        !check_buffer(&gv, groups + 1, 8, "group_tiles") || !check_buffer(&qv, rows, 8, "x_sq") ||
        !check_buffer(&ov, rows, 8, "perm") ||
        !check_buffer(&bv, rows, 4, "best") || !check_buffer(&iv, rows, 8, "index") ||
        !check_buffer(&sv, rows, 4, "second"))
        goto done;
    const int64_t *gt = (const int64_t *)gv.buf;
    for (Py_ssize_t g = 0; g < groups; g++)
        if (gt[0] != 0 || gt[g] > gt[g + 1] || gt[groups] != codes / LANES) {
            PyErr_SetString(PyExc_ValueError, "nearest_two_pruned: group_tiles must rise from 0 to codes / 16");
            goto done;
        }
    for (Py_ssize_t i = start; i < stop; i++)
        if (((const int64_t *)ov.buf)[i] < 0 || ((const int64_t *)ov.buf)[i] >= rows) {
            PyErr_SetString(PyExc_ValueError, "nearest_two_pruned: perm must hold row numbers in [0, rows)");
            goto done;
        }
    int status = 0;
#ifdef HAVE_X86_PATHS
    Py_BEGIN_ALLOW_THREADS status = search_pruned_avx512(
        (const float *)xv.buf, (const float *)pv.buf, (const float *)nv.buf, (const float *)lv.buf, gt,
        (const double *)qv.buf, (const int64_t *)ov.buf, gamma, (float *)bv.buf, (int64_t *)iv.buf, (float *)sv.buf, dim, groups, start, stop,
        &visited);
    Py_END_ALLOW_THREADS
#endif
    if (status != 0) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyLong_FromLongLong(visited);
done:
    PyBuffer_Release(&xv);
    PyBuffer_Release(&pv);
    PyBuffer_Release(&nv);
    PyBuffer_Release(&lv);
    PyBuffer_Release(&gv);
    PyBuffer_Release(&qv);
    PyBuffer_Release(&ov);
    PyBuffer_Release(&bv);
    PyBuffer_Release(&iv);
    PyBuffer_Release(&sv);
    return result;
}

/* group_bounds(x, centres_t, centre_sq, radius, lb, nearest, x_sq, rows, dim, groups, padded_groups, start, stop): the pruned
 * search's bounds for rows [start, stop) (see group_bounds_avx512; GIL released). */
static PyObject *py_group_bounds(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer xv, cv, mv, rv, lv, nv, qv;
    Py_ssize_t rows, dim, groups, padded, start, stop;
    if (!PyArg_ParseTuple(args, "y*y*y*y*w*w*w*nnnnnn", &xv, &cv, &mv, &rv, &lv, &nv, &qv, &rows, &dim, &groups,
                          &padded, &start, &stop))
        return NULL;
    PyObject *result = NULL;
#ifdef HAVE_X86_PATHS
    const int usable = cpu_has_avx512();
#else
    const int usable = 0;
#endif
    if (!usable) {
        PyErr_SetString(PyExc_ValueError, "group_bounds: needs the avx512 path, which this CPU or build lacks");
        goto done;
    }
    if (dim <= 0 || groups <= 0 || padded < groups || padded % 8 != 0 || start < 0 || stop > rows || start > stop) {
        PyErr_SetString(PyExc_ValueError, "group_bounds: bad sizes");
        goto done;
    }
    if (!check_buffer(&xv, rows * dim, 4, "x") || !check_buffer(&cv, dim * padded, 8, "centres_t") ||
        !check_buffer(&mv, padded, 8, "centre_sq") || !check_buffer(&rv, padded, 8, "radius") || !check_buffer(&lv, rows * groups, 4, "lb") ||
        !check_buffer(&nv, rows, 8, "nearest") || !check_buffer(&qv, rows, 8, "x_sq"))
        goto done;
#ifdef HAVE_X86_PATHS
    Py_BEGIN_ALLOW_THREADS group_bounds_avx512((const float *)xv.buf, (const double *)cv.buf, (const double *)mv.buf,
                                               (const double *)rv.buf,
                                               dim, groups, padded, start, stop, (float *)lv.buf, (int64_t *)nv.buf,
                                               (double *)qv.buf);
    Py_END_ALLOW_THREADS
#endif
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&xv);
    PyBuffer_Release(&cv);
    PyBuffer_Release(&mv);
    PyBuffer_Release(&rv);
    PyBuffer_Release(&lv);
    PyBuffer_Release(&nv);
    PyBuffer_Release(&qv);
    return result;
}

/* fma_flops(width, iterations) -> FLOPs done by `iterations` steps of the width-lane FMA probe (GIL released;
 * the caller times it). Width 8 needs AVX2+FMA, 16 needs AVX-512F. */
static PyObject *fma_flops(PyObject *self, PyObject *args) {
    (void)self;
    int width;
    long iterations;
    if (!PyArg_ParseTuple(args, "il", &width, &iterations)) return NULL;
    double flops = -1.0;
    float sink = 0.0f;
#ifdef HAVE_X86_PATHS
    if (width == 8 && cpu_has_avx2()) {
        Py_BEGIN_ALLOW_THREADS flops = fma_loop8(iterations, &sink);
        Py_END_ALLOW_THREADS
    } else if (width == 16 && cpu_has_avx512()) {
        Py_BEGIN_ALLOW_THREADS flops = fma_loop16(iterations, &sink);
        Py_END_ALLOW_THREADS
    }
#endif
    if (flops < 0) {
        PyErr_Format(PyExc_ValueError, "fma_flops: no %d-lane FMA on this CPU or build (8 needs AVX2+FMA, "
                     "16 needs AVX-512F)", width);
        return NULL;
    }
    return PyFloat_FromDouble(flops + 0.0 * sink);
}

/* ((name, row_tile), ...) of the paths usable here, fastest first ("generic" always last). */
static PyObject *kernels(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    for (int p = 0; p < NUM_PATHS; p++) {
        if (!paths[p].usable()) continue;
        PyObject *item = Py_BuildValue("(si)", paths[p].name, paths[p].row_tile);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
    }
    PyObject *tuple = PyList_AsTuple(out);
    Py_DECREF(out);
    return tuple;
}

static PyMethodDef methods[] = {
    {"nearest_two", nearest_two, METH_VARARGS,
     "nearest_two(x, packed, norms, best, index, second, rows, dim, codes, start, stop, kernel) -> None"},
    {"pair_distances", py_pair_distances, METH_VARARGS,
     "pair_distances(x, codebook, rows, codes, out, num_rows, num_codes, dim, pairs) -> None"},
    {"near_codes", near_codes, METH_VARARGS,
     "near_codes(x, packed, norms, rows, limits, out_rows, out_codes, num_rows, dim, codes, count, cap, kernel) -> pairs"},
    {"nearest_two_pruned", nearest_two_pruned, METH_VARARGS,
     "nearest_two_pruned(x, packed, norms, lb, group_tiles, x_sq, perm, gamma, best, index, second, rows, dim, "
     "codes, groups, start, stop) -> tiles visited"},
    {"group_bounds", py_group_bounds, METH_VARARGS,
     "group_bounds(x, centres_t, centre_sq, radius, lb, nearest, x_sq, rows, dim, groups, padded_groups, start, stop) -> None"},
    {"fma_flops", fma_flops, METH_VARARGS, "fma_flops(width, iterations) -> FLOPs of the FMA throughput probe."},
    {"kernels", kernels, METH_NOARGS, "((name, row_tile), ...) of the code paths usable here, fastest first."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fused_search",
                                    "Fused nearest-code search (see nst_hf.quantizers.fused).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__fused_search(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddIntConstant(m, "LANES", LANES) < 0 || PyModule_AddIntConstant(m, "DIM_BLOCK", DIM_BLOCK) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
