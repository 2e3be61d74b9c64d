/* float32 products C = A B^T on AVX2 + FMA, on torch's pool; the distance matrix's product
 * with its cancellation screen fused into each register tile; and the k-means assignment, whose
 * tiles are folded into each point's running (min, second min, index) instead of stored
 * (included once by _ckernels.c, after the float32 kernels whose screen thresholds, direct
 * fix-up, near-tie re-check and accumulation it reuses).
 *
 * Why our own product: on the 2-core AVX2 EPYC (Zen 1), at 4096 x 4096 x 128 and 16384 x 1024 x
 * 256 into a reused result (medians of 7 interleaved calls), these tiles ran at 32-34 GFLOP/s on
 * one thread and 62-64 on two, torch's MKL sgemm at 29-30 / 55 (OpenBLAS, measured apart: 33-36
 * / 64-70).  Fusing the screen into the tiles also removes the second
 * pass over the result (4.1 ms of reading at 4096 x 4096).  AVX-512 machines keep torch.mm
 * (this kernel uses half their vector width); sqdist._cpu_kernels decides.
 *
 * Layout (Goto / BLIS): columns in blocks of nc (their packed B fits 1 MiB of the shared
 * cache), K in blocks of at most SQ_KC, rows in blocks of SQ_MC packed per thread; a 6 x 16
 * tile's 12 accumulators stay in registers across its k block.  Every C entry is one
 * sequential chain of fused multiply-adds in k (a k block's partial sum is stored as float32
 * and reloaded unchanged): the same bits on any thread count. */

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

#define SQ_MR 6
#define SQ_NR 16
/* Rows per packed block and bytes of packed B per column block: 2-core AVX2 EPYC, 2 threads, ms
 * (median of 9 interleaved) at 4096 x 4096 x 128 / 16384 x 1024 x 256 / 1024 x 4096 x 128 for
 * (MC, bytes) = (48, 2 MiB) 72.5 / 126 / -, (96, 2 MiB) 65.4 / 121 / -, (72..144, 0.5..1 MiB)
 * 62.5-67.0 / 120-126 / 16.1-17.8 (within the noise), torch.mm 71.9 / 134 / 19.1. */
#ifndef SQ_MC
#define SQ_MC 96
#endif
#define SQ_KC 384
#ifndef SQ_NC_BYTES
#define SQ_NC_BYTES (1 << 20)
#endif

/* Whether this CPU runs the kernels below (AVX2 and FMA). */
SQ_EXPORT int sq_gemm_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

/* The distance matrix's epilogue (NULL for a plain product).  The product runs over the first D
 * columns of the augmented rows [x_c, nx, 1] . [-2 t_c, 1, nt]; the tile then adds nx[i] and nt[j]
 * in that order, the bits of the augmented chain's last two fused multiply-adds (fma(nx, 1, a) =
 * a + nx rounded once); entries below tiu[i] + tup[j] take the exact test and the direct formula
 * (fix_row_f32). */
typedef struct {
    const float *tiu; /* (n,) up(tau * nx[i]) */
    const float *tim; /* (ceil(n / 6),) the largest tiu of each 6 rows */
    const float *nx;  /* (n,) */
    const float *nt;  /* (P,) */
    const float *tup; /* (P,) up(tnt[j]) */
    const float *tnt; /* (P,) tau * nt[j] */
    const float *X;   /* (n, D) the original rows */
    const float *T;   /* (P, D) */
    double tau;
    int64_t D;
} sq_screen;

/* M(row, its two accumulators) for each of the tile's six rows. */
#define SQ_ROWS(M) M(0, c00, c01) M(1, c10, c11) M(2, c20, c21) M(3, c30, c31) M(4, c40, c41) M(5, c50, c51)

/* The tile's k loop: the accumulators c00..c51 += a (kc, 6) . b (kc, 16), one fused multiply-add
 * per entry and k, in k order. */
#define SQ_ROW(r, v0, v1)                                                                                              \
    t = _mm256_broadcast_ss(a_ + r);                                                                                   \
    v0 = _mm256_fmadd_ps(t, b0, v0);                                                                                   \
    v1 = _mm256_fmadd_ps(t, b1, v1);
#define SQ_KLOOP(kc, a, b)                                                                                             \
    {                                                                                                                  \
        const float *a_ = (a), *b_ = (b);                                                                              \
        for (int64_t k = 0; k < (kc); k++) {                                                                           \
            const __m256 b0 = _mm256_load_ps(b_), b1 = _mm256_load_ps(b_ + 8); /* (16,) */                             \
            __m256 t;                                                                                                  \
            SQ_ROWS(SQ_ROW)                                                                                            \
            a_ += SQ_MR;                                                                                               \
            b_ += SQ_NR;                                                                                               \
        }                                                                                                              \
    }

/* The 6 x 16 register tile: c (6 rows, stride ldc) = [c +] a (kc, 6) . b (kc, 16). */
__attribute__((target("avx2,fma"))) static int sq_kernel(int64_t kc, const float *restrict a,
                                                         const float *restrict b, float *restrict c, int64_t ldc,
                                                         int acc, const float *restrict en, const float *restrict eu,
                                                         const float *restrict ex, const float *restrict ei)
{
    __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    if (acc) {
        c00 = _mm256_loadu_ps(c + 0 * ldc), c01 = _mm256_loadu_ps(c + 0 * ldc + 8);
        c10 = _mm256_loadu_ps(c + 1 * ldc), c11 = _mm256_loadu_ps(c + 1 * ldc + 8);
        c20 = _mm256_loadu_ps(c + 2 * ldc), c21 = _mm256_loadu_ps(c + 2 * ldc + 8);
        c30 = _mm256_loadu_ps(c + 3 * ldc), c31 = _mm256_loadu_ps(c + 3 * ldc + 8);
        c40 = _mm256_loadu_ps(c + 4 * ldc), c41 = _mm256_loadu_ps(c + 4 * ldc + 8);
        c50 = _mm256_loadu_ps(c + 5 * ldc), c51 = _mm256_loadu_ps(c + 5 * ldc + 8);
    } else {
        c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
    }
    SQ_KLOOP(kc, a, b)
    int flagged = 0;
    if (en) { /* the epilogue (ex: this tile's 6 nx, ei: the largest of their tiu; en, eu: its 16 nt and tup) */
        const __m256 n0 = _mm256_loadu_ps(en), n1 = _mm256_loadu_ps(en + 8);
        const __m256 u0 = _mm256_loadu_ps(eu), u1 = _mm256_loadu_ps(eu + 8);
        /* the screen: each column's smallest entry over the tile's rows (min(v, mn) returns mn
         * when v is NaN, so a NaN entry -- only in rows or columns with unsafe norms, which are
         * overwritten later -- never hides another row's) against one threshold row, the
         * largest of the rows' tiu (*ei) plus tup; a flagged tile takes the exact per-row
         * screen in sq_fix_tile */
        const __m256 t = _mm256_broadcast_ss(ei);
        __m256 m0 = _mm256_set1_ps(INFINITY), m1 = m0, x;
#define SQ_EPI(r, v0, v1)                                                                                              \
    x = _mm256_broadcast_ss(ex + r);                                                                                   \
    v0 = _mm256_add_ps(_mm256_add_ps(v0, x), n0);                                                                      \
    v1 = _mm256_add_ps(_mm256_add_ps(v1, x), n1);                                                                      \
    m0 = _mm256_min_ps(v0, m0);                                                                                        \
    m1 = _mm256_min_ps(v1, m1);
        SQ_ROWS(SQ_EPI)
#undef SQ_EPI
        const __m256 m = _mm256_or_ps(_mm256_cmp_ps(m0, _mm256_add_ps(t, u0), _CMP_LT_OQ),
                                      _mm256_cmp_ps(m1, _mm256_add_ps(t, u1), _CMP_LT_OQ));
        flagged = _mm256_movemask_ps(m);
    }
    _mm256_storeu_ps(c + 0 * ldc, c00), _mm256_storeu_ps(c + 0 * ldc + 8, c01);
    _mm256_storeu_ps(c + 1 * ldc, c10), _mm256_storeu_ps(c + 1 * ldc + 8, c11);
    _mm256_storeu_ps(c + 2 * ldc, c20), _mm256_storeu_ps(c + 2 * ldc + 8, c21);
    _mm256_storeu_ps(c + 3 * ldc, c30), _mm256_storeu_ps(c + 3 * ldc + 8, c31);
    _mm256_storeu_ps(c + 4 * ldc, c40), _mm256_storeu_ps(c + 4 * ldc + 8, c41);
    _mm256_storeu_ps(c + 5 * ldc, c50), _mm256_storeu_ps(c + 5 * ldc + 8, c51);
    return flagged;
}

/* The rows of a finished tile c (mr, nr) at rows i0.., columns j0.. that the screen flags take
 * the exact test and the direct formula; returns the recomputed entries. */
static int64_t sq_fix_tile(float *c, int64_t ldc, int64_t mr, int64_t nr, int64_t i0, int64_t j0, const sq_screen *s)
{
    int64_t hits = 0;
    for (int64_t r = 0; r < mr; r++) {
        float *row = c + r * ldc;
        const float tiu = s->tiu[i0 + r];
        int any = 0;
        for (int64_t u = 0; u < nr; u++)
            any |= row[u] < tiu + s->tup[j0 + u];
        if (any)
            hits += fix_row_f32(row, s->tau * (double)s->nx[i0 + r], s->tnt + j0, s->X + (i0 + r) * s->D,
                                s->T + j0 * s->D, nr, s->D);
    }
    return hits;
}

/* One tile (mr <= 6, nr <= 16) of c, with the epilogue s on the last k block: edges go through
 * a full 6 x 16 buffer (and take the epilogue in scalar code, the same operations). */
static int64_t sq_tile(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, int64_t mr, int64_t nr,
                       int acc, int last, int64_t i0, int64_t j0, const sq_screen *s)
{
    const int epi = last && s;
    if (mr == SQ_MR && nr == SQ_NR) {
        const int flagged = epi ? sq_kernel(kc, a, b, c, ldc, acc, s->nt + j0, s->tup + j0, s->nx + i0, s->tim + i0 / SQ_MR)
                                : sq_kernel(kc, a, b, c, ldc, acc, NULL, NULL, NULL, NULL);
        return flagged ? sq_fix_tile(c, ldc, mr, nr, i0, j0, s) : 0;
    }
    float buf[SQ_MR * SQ_NR] __attribute__((aligned(32))) = {0};
    if (acc)
        for (int64_t r = 0; r < mr; r++)
            memcpy(buf + r * SQ_NR, c + r * ldc, (size_t)nr * sizeof(float));
    sq_kernel(kc, a, b, buf, SQ_NR, acc, NULL, NULL, NULL, NULL);
    for (int64_t r = 0; r < mr; r++) {
        float *row = c + r * ldc;
        for (int64_t u = 0; u < nr; u++)
            row[u] = epi ? (buf[r * SQ_NR + u] + s->nx[i0 + r]) + s->nt[j0 + u] : buf[r * SQ_NR + u];
    }
    return epi ? sq_fix_tile(c, ldc, mr, nr, i0, j0, s) : 0;
}

/* Packs rows r0..r0+w-1 (w <= width, the rest zero) of M (ld), columns p0..p0+kc-1, as (kc, width). */
static void sq_pack(const float *M, int64_t ld, int64_t r0, int64_t w, int64_t width, int64_t p0, int64_t kc,
                    float *restrict dst)
{
    for (int64_t u = 0; u < width; u++) {
        if (u < w) {
            const float *src = M + (r0 + u) * ld + p0;
            for (int64_t k = 0; k < kc; k++)
                dst[k * width + u] = src[k];
        } else {
            for (int64_t k = 0; k < kc; k++)
                dst[k * width + u] = 0.0f;
        }
    }
}

static int64_t sq_min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* C (n, P; ldc) = A (n, K; lda) B (P, K; ldb)^T, then the screen s (NULL: none).  Returns the
 * recomputed entries, or -1 when scratch memory could not be allocated. */
static int64_t sq_gemm(const float *A, int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc, int64_t n,
                       int64_t P, int64_t K, const sq_screen *s, int nthreads)
{
    if (n <= 0 || P <= 0)
        return 0;
    if (K <= 0) {
        for (int64_t i = 0; i < n; i++)
            memset(C + i * ldc, 0, (size_t)P * sizeof(float));
        return 0;
    }
    const int64_t kcm = sq_min64(K, SQ_KC);
    const int64_t Pr = (P + SQ_NR - 1) / SQ_NR * SQ_NR;
    int64_t ncm = SQ_NC_BYTES / (int64_t)(kcm * sizeof(float)) / SQ_NR * SQ_NR;
    ncm = ncm < SQ_NR ? SQ_NR : ncm;
    const int64_t nblocks = (Pr + ncm - 1) / ncm; /* even column blocks */
    const int64_t nc = ((Pr + nblocks - 1) / nblocks + SQ_NR - 1) / SQ_NR * SQ_NR;
    if (nthreads < 1)
        nthreads = 1;
    float *Bp = NULL, *Ap = NULL;
    if (posix_memalign((void **)&Bp, 64, (size_t)(nc * kcm) * sizeof(float)))
        return -1;
    if (posix_memalign((void **)&Ap, 64, (size_t)(nthreads * SQ_MC * kcm) * sizeof(float))) {
        free(Bp);
        return -1;
    }
    const int64_t nib = (n + SQ_MC - 1) / SQ_MC;
    int64_t hits = 0;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1) reduction(+ : hits)
    {
        float *ap = Ap + (int64_t)omp_get_thread_num() * SQ_MC * kcm;
        for (int64_t jc = 0; jc < P; jc += nc) {
            const int64_t ncb = sq_min64(nc, P - jc);
            for (int64_t pc = 0; pc < K; pc += kcm) {
                const int64_t kc = sq_min64(kcm, K - pc);
                const int acc = pc > 0, last = pc + kc == K;
#pragma omp for schedule(static)
                for (int64_t jp = 0; jp < (ncb + SQ_NR - 1) / SQ_NR; jp++)
                    sq_pack(B, ldb, jc + jp * SQ_NR, sq_min64(SQ_NR, ncb - jp * SQ_NR), SQ_NR, pc, kc,
                            Bp + jp * SQ_NR * kc);
                /* work items: a row block and a segment of the column block (segments only when
                 * there are too few row blocks for the threads) */
                const int64_t panels = (ncb + SQ_NR - 1) / SQ_NR;
                const int64_t segs = sq_min64(panels, nib >= 4 * nthreads ? 1 : (4 * nthreads + nib - 1) / nib);
                const int64_t seg = (panels + segs - 1) / segs * SQ_NR;
#pragma omp for schedule(dynamic, 1)
                for (int64_t w = 0; w < nib * segs; w++) {
                    const int64_t ib = w / segs, j0 = (w % segs) * seg, j1 = sq_min64(ncb, j0 + seg);
                    const int64_t ic = ib * SQ_MC, mc = sq_min64(SQ_MC, n - ic);
                    for (int64_t ip = 0; ip < mc; ip += SQ_MR)
                        sq_pack(A, lda, ic + ip, sq_min64(SQ_MR, mc - ip), SQ_MR, pc, kc, ap + ip * kc);
                    for (int64_t jr = j0; jr < j1; jr += SQ_NR)
                        for (int64_t ip = 0; ip < mc; ip += SQ_MR)
                            hits += sq_tile(kc, ap + ip * kc, Bp + jr * kc, C + (ic + ip) * ldc + jc + jr, ldc,
                                            sq_min64(SQ_MR, mc - ip), sq_min64(SQ_NR, ncb - jr), acc, last, ic + ip,
                                            jc + jr, s);
                }
            }
        }
    }
    free(Ap);
    free(Bp);
    return hits;
}

/* C (n, P; ldc) = A (n, K; lda) B (P, K; ldb)^T; 0, or -1 when scratch memory could not be allocated. */
SQ_EXPORT int sgemm_nt(const float *A, int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc, int64_t n,
                       int64_t P, int64_t K, int nthreads)
{
    return sq_gemm(A, lda, B, ldb, C, ldc, n, P, K, NULL, nthreads) < 0 ? -1 : 0;
}

/* gemm_fixup_f32 fused into the product: d (n, P) = Xa (n, D+2) Ta (P, D+2)^T for the augmented
 * rows of augment_f32 / prepare_right_f32 (the product over their first D columns, the last two
 * added in the tile's epilogue with the same bits), each tile screened and fixed while in
 * registers and cache.  Returns how many entries were recomputed, or -1 (no scratch memory). */
SQ_EXPORT int64_t gemm_sqdist_f32(const float *Xa, const float *Ta, float *d, int64_t n, int64_t P, int64_t D,
                                  const float *nx, const float *nt, const float *tnt, double tau, const float *X,
                                  const float *T, int nthreads)
{
    float *tiu = (float *)malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    float *tim = (float *)malloc((size_t)(n > 0 ? (n + SQ_MR - 1) / SQ_MR : 1) * sizeof(float));
    float *tup = (float *)malloc((size_t)(P > 0 ? P : 1) * sizeof(float));
    int64_t hits = -1;
    if (tiu && tim && tup) {
        for (int64_t i = 0; i < n; i++) {
            tiu[i] = up_f32(tau * (double)nx[i]);
            if (i % SQ_MR == 0)
                tim[i / SQ_MR] = -INFINITY;
            if (tiu[i] > tim[i / SQ_MR]) /* NaN skipped: such rows are overwritten later (unsafe norms) */
                tim[i / SQ_MR] = tiu[i];
        }
        screen_cols_f32(tnt, tup, P);
        const sq_screen s = {tiu, tim, nx, nt, tup, tnt, X, T, tau, D};
        hits = sq_gemm(Xa, D + 2, Ta, D + 2, d, P, n, P, D, &s, nthreads);
    }
    free(tiu);
    free(tim);
    free(tup);
    return hits;
}

/* ---------------------------------------------------------------------- */
/* the k-means assignment on these tiles: products folded, never stored    */
/* ---------------------------------------------------------------------- */

/* Points per block of the assignment (panels of 16, packed per thread; with a block of SQ_MC
 * centres both stay in L2). */
#define SQ_PB 128

/* Packs rows r0..r0+w-1 (w <= SQ_NR, the rest zero) of X (n, D) centred on m, with the augmented
 * 1, as (D+1, SQ_NR): the transposed path's right factor [x - m, 1] (plain IEEE subtractions,
 * the same bits). */
static void sq_pack_centred(const float *X, int64_t D, const float *m, int64_t r0, int64_t w, float *restrict dst)
{
    for (int64_t u = 0; u < SQ_NR; u++) {
        if (u < w) {
            const float *x = X + (r0 + u) * D;
            for (int64_t k = 0; k < D; k++)
                dst[k * SQ_NR + u] = x[k] - m[k];
            dst[D * SQ_NR + u] = 1.0f;
        } else {
            for (int64_t k = 0; k <= D; k++)
                dst[k * SQ_NR + u] = 0.0f;
        }
    }
}

/* One centre's products v (16 points, two halves) into the points' running (smallest a, second
 * smallest with multiplicity b, index x of the first smallest): col_min2's min2_step, exactly
 * (maxps / minps / a blend are "v > a ? v : a", "b < hi ? b : hi", "v < a ? k : x", "v < a ? v : a"). */
#define SQ_MIN2(v0, v1, kk)                                                                                            \
    {                                                                                                                  \
        const __m256 k_ = _mm256_castsi256_ps(_mm256_set1_epi32((int32_t)(kk)));                                       \
        const __m256 l0 = _mm256_cmp_ps(v0, a0, _CMP_LT_OQ), l1 = _mm256_cmp_ps(v1, a1, _CMP_LT_OQ);                    \
        b0 = _mm256_min_ps(b0, _mm256_max_ps(v0, a0));                                                                 \
        b1 = _mm256_min_ps(b1, _mm256_max_ps(v1, a1));                                                                 \
        x0 = _mm256_blendv_ps(x0, k_, l0);                                                                             \
        x1 = _mm256_blendv_ps(x1, k_, l1);                                                                             \
        a0 = _mm256_min_ps(v0, a0);                                                                                    \
        a1 = _mm256_min_ps(v1, a1);                                                                                    \
    }

/* A tile of the transposed products (centres k0..k0+nk-1 of the packed a, nk <= 6, against the 16
 * points of b) folded at once, in centre order, into the points' state st = (a[16], b[16],
 * x[16]); first: the first centre starts it as col_min2 does (a = its product, b = inf, x = 0). */
__attribute__((target("avx2,fma"))) static void sq_kernel_min2(int64_t kc, const float *restrict a,
                                                              const float *restrict b, int64_t k0, int64_t nk,
                                                              int first, float *restrict st)
{
    __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
    SQ_KLOOP(kc, a, b)
    __m256 a0, a1, b0, b1, x0, x1;
    if (first) {
        a0 = c00, a1 = c01;
        b0 = b1 = _mm256_set1_ps(INFINITY);
        x0 = x1 = _mm256_setzero_ps(); /* index 0 */
    } else {
        a0 = _mm256_loadu_ps(st), a1 = _mm256_loadu_ps(st + 8);
        b0 = _mm256_loadu_ps(st + 16), b1 = _mm256_loadu_ps(st + 24);
        x0 = _mm256_loadu_ps(st + 32), x1 = _mm256_loadu_ps(st + 40);
        SQ_MIN2(c00, c01, k0)
    }
    if (nk > 1)
        SQ_MIN2(c10, c11, k0 + 1)
    if (nk > 2)
        SQ_MIN2(c20, c21, k0 + 2)
    if (nk > 3)
        SQ_MIN2(c30, c31, k0 + 3)
    if (nk > 4)
        SQ_MIN2(c40, c41, k0 + 4)
    if (nk > 5)
        SQ_MIN2(c50, c51, k0 + 5)
    _mm256_storeu_ps(st, a0), _mm256_storeu_ps(st + 8, a1);
    _mm256_storeu_ps(st + 16, b0), _mm256_storeu_ps(st + 24, b1);
    _mm256_storeu_ps(st + 32, x0), _mm256_storeu_ps(st + 40, x1);
}

/* The products of one centred row xa (D+1,) with every centre, from the packed centre panels Ap
 * (6 per panel, padded by 8 floats): the tiles' chains of fused multiply-adds, the same bits; e (K,). */
__attribute__((target("avx2,fma"))) static void sq_row_products(const float *restrict xa, const float *restrict Ap,
                                                               int64_t K, int64_t kc, float *restrict e)
{
    float buf[8] __attribute__((aligned(32)));
    for (int64_t k0 = 0; k0 < K; k0 += SQ_MR) {
        const float *p = Ap + k0 * kc;
        __m256 c = _mm256_setzero_ps();
        for (int64_t k = 0; k < kc; k++) /* lanes 6 and 7 read the next panel: not kept */
            c = _mm256_fmadd_ps(_mm256_broadcast_ss(xa + k), _mm256_loadu_ps(p + k * SQ_MR), c);
        _mm256_store_ps(buf, c);
        for (int64_t u = 0; u < SQ_MR && k0 + u < K; u++)
            e[k0 + u] = buf[u];
    }
}

/* The k-means assignment of the transposed path (argmin_gemm_t_f32) with its products computed
 * here, in the same register tiles (6 centres x 16 points), and folded at once: X (n, D) rows,
 * m (D,) the centring vector, A (K, D+1) = [-2 c_c, |c_c|^2], C (K, D) the centres, D + 1 <=
 * SQ_KC.  Per block of nb rows (the transposed path's blocks, in order; scratch memory O(nb +
 * K D)), phase 1 (any thread, blocks of points): each point's running (min, second, index) over
 * the centres in order, col_min2's values; phase 2: argmin_gemm_t's decision, near-tie re-check
 * and accumulation, subgroup s taking rows sub[s]:sub[s+1] of the block (sublast for a short last
 * block): its bits, on every thread count.  0, or -1 when scratch memory could not be allocated. */
SQ_EXPORT int assign_gemm_f32(const float *X, int64_t n, const float *m, const float *A, const float *C, int64_t K,
                              int64_t D, double ncmax, double gamma, int64_t nb, const int64_t *sub,
                              const int64_t *sublast, int64_t S, int64_t *labels, float *mind, double *psums,
                              int64_t *pcounts, double *pinert, int nthreads)
{
    if (n <= 0 || K <= 0)
        return 0;
    if (nthreads < 1)
        nthreads = 1;
    nb = sq_min64(nb, n);
    const int64_t kc = D + 1, cpan = (K + SQ_MR - 1) / SQ_MR;
    const int64_t cblock = SQ_MC / SQ_MR; /* centre panels per L2 block */
    /* per thread: the packed points, their state (a, b, x per point), a row's products, its centred row */
    const int64_t per = (SQ_PB * kc + 3 * SQ_PB + K + kc + 15) / 16 * 16;
    float *Ap = NULL, *work = NULL, *m1 = (float *)malloc((size_t)nb * sizeof(float)); /* one block's (min, */
    float *m2 = (float *)malloc((size_t)nb * sizeof(float));                          /* second, index) */
    int32_t *ix = (int32_t *)malloc((size_t)nb * sizeof(int32_t));
    int err = !m1 || !m2 || !ix;
    err = err || posix_memalign((void **)&Ap, 64, (size_t)(cpan * SQ_MR * kc + 8) * sizeof(float));
    err = err || posix_memalign((void **)&work, 64, (size_t)(nthreads * per) * sizeof(float));
    if (!err) {
        memset(Ap + cpan * SQ_MR * kc, 0, 8 * sizeof(float));
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
        {
            float *bp = work + (int64_t)omp_get_thread_num() * per; /* 64-byte aligned: per is a multiple of 16 */
            float *st = bp + SQ_PB * kc, *e = st + 3 * SQ_PB, *xa = e + K;
#pragma omp for schedule(static)
            for (int64_t ip = 0; ip < cpan; ip++)
                sq_pack(A, kc, ip * SQ_MR, sq_min64(SQ_MR, K - ip * SQ_MR), SQ_MR, 0, kc, Ap + ip * SQ_MR * kc);
            for (int64_t b0 = 0; b0 < n; b0 += nb) { /* the transposed path's blocks, in order */
                const int64_t r = sq_min64(nb, n - b0), nib = (r + SQ_PB - 1) / SQ_PB;
                const int64_t *sb = r < nb ? sublast : sub;
#pragma omp for schedule(dynamic, 1)
                for (int64_t ib = 0; ib < nib; ib++) { /* phase 1: any thread, blocks of points */
                    const int64_t i0 = ib * SQ_PB, pb = sq_min64(SQ_PB, r - i0), ppan = (pb + SQ_NR - 1) / SQ_NR;
                    for (int64_t jp = 0; jp < ppan; jp++)
                        sq_pack_centred(X, D, m, b0 + i0 + jp * SQ_NR, sq_min64(SQ_NR, pb - jp * SQ_NR),
                                        bp + jp * SQ_NR * kc);
                    for (int64_t c0 = 0; c0 < cpan; c0 += cblock) /* a block of centres in L2, points' panel in L1 */
                        for (int64_t jp = 0; jp < ppan; jp++)
                            for (int64_t ip = c0; ip < sq_min64(cpan, c0 + cblock); ip++)
                                sq_kernel_min2(kc, Ap + ip * SQ_MR * kc, bp + jp * SQ_NR * kc, ip * SQ_MR,
                                               sq_min64(SQ_MR, K - ip * SQ_MR), ip == 0, st + jp * 3 * SQ_NR);
                    for (int64_t u = 0; u < pb; u++) {
                        const float *q = st + (u / SQ_NR) * 3 * SQ_NR + u % SQ_NR;
                        m1[i0 + u] = q[0];
                        m2[i0 + u] = q[SQ_NR];
                        memcpy(ix + i0 + u, q + 2 * SQ_NR, sizeof(int32_t));
                    }
                }
#pragma omp for schedule(dynamic, 1)
                for (int64_t s = 0; s < S; s++) { /* phase 2: subgroup s of this block */
                    double acc = 0.0;
                    for (int64_t i = sb[s]; i < sb[s + 1]; i++) {
                        const int64_t xi = b0 + i;
                        const float *x = X + xi * D;
                        const double lim = (double)m1[i] + 2.0 * gamma * (centred_norm_f32(x, m, D) + ncmax);
                        double best;
                        int64_t bk;
                        if ((double)m2[i] > lim) { /* one candidate (almost every row) */
                            bk = ix[i];
                            best = dist_row_f32(x, C + bk * D, D);
                        } else { /* the row's products again (the same bits), argmin_gemm_t's re-check */
                            for (int64_t k = 0; k < D; k++)
                                xa[k] = x[k] - m[k];
                            xa[D] = 1.0f;
                            sq_row_products(xa, Ap, K, kc, e);
                            bk = near_tie_f32(x, C, K, D, lim, e, 1, NULL, NULL, 0, &best);
                        }
                        acc += take_f32(x, D, bk, best, labels + xi, mind + xi, pcounts + s * K, psums + s * K * D);
                    }
                    pinert[s] += acc;
                }
            }
        }
    }
    free(m1);
    free(m2);
    free(ix);
    free(Ap);
    free(work);
    return err ? -1 : 0;
}

#else /* not x86-64 with GCC: no kernels (sq_gemm_supported says so; sqdist uses torch.mm) */

SQ_EXPORT int sq_gemm_supported(void) { return 0; }

SQ_EXPORT int sgemm_nt(const float *A, int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc, int64_t n,
                       int64_t P, int64_t K, int nthreads)
{
    return -2;
}

SQ_EXPORT int64_t gemm_sqdist_f32(const float *Xa, const float *Ta, float *d, int64_t n, int64_t P, int64_t D,
                                  const float *nx, const float *nt, const float *tnt, double tau, const float *X,
                                  const float *T, int nthreads)
{
    return -2;
}

SQ_EXPORT int assign_gemm_f32(const float *X, int64_t n, const float *m, const float *A, const float *C, int64_t K,
                              int64_t D, double ncmax, double gamma, int64_t nb, const int64_t *sub,
                              const int64_t *sublast, int64_t S, int64_t *labels, float *mind, double *psums,
                              int64_t *pcounts, double *pinert, int nthreads)
{
    return -2;
}
#endif
