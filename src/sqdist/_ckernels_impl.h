/* One dtype's kernels; included twice by _ckernels.c with REAL = float / double.
 *
 * Every function mirrors the numba kernel of the same name in
 * src/sqdist/_cpu_nb.py (same formulas, same order of the additions that
 * reach a result, same tie rule: strict "<", so the smallest index wins).
 * Row-reducing kernels take row groups fixed by the caller from the shape
 * only; a group is summed sequentially in float64 by one thread and the
 * caller adds the group partials in group order, so the bytes never depend
 * on the thread count.  Hot loops live in SQ_CLONES functions (one copy per
 * instruction set, chosen at load time); the OpenMP regions only hand out
 * groups, so the outlined region bodies need no vector code of their own.
 */

/* ---------------------------------------------------------------------- */
/* small D: direct formula, fused assign + accumulate                      */
/* ---------------------------------------------------------------------- */

/* Row x (D,) joins cluster bk: its count and float64 sums. */
static inline __attribute__((always_inline)) void FN(add_row)(const REAL *restrict x, const int64_t D, int64_t bk,
                                                              int64_t *restrict pcounts, double *restrict psums)
{
    pcounts[bk] += 1;
    double *ps = psums + bk * D;
    for (int64_t j = 0; j < D; j++)
        ps[j] += x[j];
}

/* Row x (D,) joins cluster bk at squared distance best: its label, distance, count and sums;
 * returns best (the caller's inertia). */
static inline double FN(take)(const REAL *restrict x, int64_t D, int64_t bk, double best, int64_t *label, REAL *mind,
                              int64_t *restrict pcounts, double *restrict psums)
{
    *label = bk;
    *mind = (REAL)best;
    FN(add_row)(x, D, bk, pcounts, psums);
    return best;
}

/* A near tie (or a non-finite product): the nearest of the centres whose screening product is
 * within lim -- every centre when lim is not finite -- by the direct formula, ties to the lower
 * index; *best its distance.  Centre k's product is e[k * es], or (e NULL) e_of's of row xi of
 * the fused step's chunk xt. */
static int64_t FN(near_tie)(const REAL *x, const REAL *C, int64_t K, int64_t D, double lim, const REAL *e, int64_t es,
                            const REAL *A, const REAL *xt, int64_t xi, double *best);

/* Rows s:s+r of X (n, D) transposed into xt (D, chunk). */
static inline __attribute__((always_inline)) void FN(transpose_rows)(const REAL *restrict X, int64_t D, int64_t s,
                                                                      int64_t r, int64_t chunk, REAL *restrict xt)
{
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < D; j++)
            xt[j * chunk + i] = X[(s + i) * D + j];
}

/* d[i] = sum_j (xt[j, i] - c[j])^2 for the r rows of a transposed chunk xt (D, chunk): the
 * direct formula, features added in order in REAL, vectorised over the rows (inlined into
 * every caller's instruction-set clone). */
static inline __attribute__((always_inline)) void FN(chunk_dist)(const REAL *restrict xt, const REAL *restrict c,
                                                                  int64_t D, int64_t r, int64_t chunk, REAL *restrict d)
{
    const REAL c0 = c[0];
    for (int64_t i = 0; i < r; i++) {
        const REAL t = xt[i] - c0;
        d[i] = t * t;
    }
    for (int64_t j = 1; j < D; j++) {
        const REAL cj = c[j];
        const REAL *restrict xj = xt + j * chunk;
        for (int64_t i = 0; i < r; i++) {
            const REAL t = xj[i] - cj;
            d[i] += t * t;
        }
    }
}

/* 32-byte vectors of REAL and of IDX (the same lane count; element alignment: unaligned loads). */
typedef REAL FN(rvec) __attribute__((vector_size(32), aligned(sizeof(REAL))));
typedef IDX FN(ivec) __attribute__((vector_size(32), aligned(sizeof(IDX))));
#define SQ_RL ((int64_t)(32 / sizeof(REAL)))

/* chunk_dist for the SQ_RL rows of one vector of a transposed chunk (x: its first row's
 * feature 0, features chunk apart) into *v: the same sums in the same order, in registers
 * (written through a pointer: a vector return value would change the ABI of the clones that
 * lack AVX). */
static inline __attribute__((always_inline)) void FN(vec_dist)(const REAL *restrict x, const REAL *restrict c,
                                                                int64_t D, int64_t chunk, FN(rvec) *restrict v)
{
    FN(rvec) t = *(const FN(rvec) *)x - c[0];
    FN(rvec) acc = t * t;
    for (int64_t j = 1; j < D; j++) {
        t = *(const FN(rvec) *)(x + j * chunk) - c[j];
        acc += t * t;
    }
    *v = acc;
}

/* The lanes of a where the mask lt is set, else those of b (lt from a vector comparison). */
#define SQ_SEL(lt, a, b) (((lt) & (a)) | (~(lt) & (b)))

/* The nearest of the K centres C (K, D) for the r rows of a transposed chunk xt (D, chunk) into
 * m1 / ix (r,): the running (min, index) centre by centre.  Strict "<": the smallest index wins
 * ties.  nan_first (a constant at each inlined call): a NaN distance wins over every number and
 * the first NaN over later ones, as torch.min -- else a NaN never replaces the running minimum
 * (the k-means assignment, whose rows are finite).  Two vectors of rows at a time keep their
 * (min, index) in registers over all K centres (1e6 x 2 x 8 float32, one thread of a 2-core
 * AVX2 EPYC: the whole assignment 20.7 -> 10.1 ms against one pass over the chunk per centre,
 * which stored and re-read each distance, minimum and index); the last r mod (2 SQ_RL) rows
 * take that element-wise form, with d (chunk,) as scratch.  Both give the bits of the scalar
 * loop. */
static inline __attribute__((always_inline)) void FN(chunk_argmin)(const REAL *restrict xt, const REAL *restrict C,
                                                                    int64_t D, int64_t K, int64_t r, int64_t chunk,
                                                                    REAL *restrict d, REAL *restrict m1,
                                                                    IDX *restrict ix, const int nan_first)
{
    int64_t i0 = 0;
    for (; i0 + 2 * SQ_RL <= r; i0 += 2 * SQ_RL) {
        FN(rvec) ma, mb, va, vb;
        FN(vec_dist)(xt + i0, C, D, chunk, &ma);
        FN(vec_dist)(xt + i0 + SQ_RL, C, D, chunk, &mb);
        FN(ivec) xa = {0}, xb = {0};
        for (int64_t k = 1; k < K; k++) {
            FN(vec_dist)(xt + i0, C + k * D, D, chunk, &va);
            FN(vec_dist)(xt + i0 + SQ_RL, C + k * D, D, chunk, &vb);
            FN(ivec) la = va < ma, lb = vb < mb;
            if (nan_first) {
                la |= (va != va) & (ma == ma);
                lb |= (vb != vb) & (mb == mb);
            }
            const FN(ivec) kk = (FN(ivec)){0} + (IDX)k;
            ma = (FN(rvec))SQ_SEL(la, (FN(ivec))va, (FN(ivec))ma);
            mb = (FN(rvec))SQ_SEL(lb, (FN(ivec))vb, (FN(ivec))mb);
            xa = SQ_SEL(la, kk, xa);
            xb = SQ_SEL(lb, kk, xb);
        }
        *(FN(rvec) *)(m1 + i0) = ma;
        *(FN(rvec) *)(m1 + i0 + SQ_RL) = mb;
        *(FN(ivec) *)(ix + i0) = xa;
        *(FN(ivec) *)(ix + i0 + SQ_RL) = xb;
    }
    const int64_t rr = r - i0;
    if (rr == 0)
        return;
    xt += i0, d += i0, m1 += i0, ix += i0;
    for (int64_t k = 0; k < K; k++) {
        FN(chunk_dist)(xt, C + k * D, D, rr, chunk, d);
        if (k == 0) {
            for (int64_t i = 0; i < rr; i++) {
                m1[i] = d[i];
                ix[i] = 0;
            }
        } else {
            const IDX kk = (IDX)k;
            for (int64_t i = 0; i < rr; i++) {
                const REAL v = d[i], m = m1[i];
                const int lt = nan_first ? (v < m) | ((v != v) & (m == m)) : v < m;
                m1[i] = lt ? v : m;
                ix[i] = lt ? kk : ix[i];
            }
        }
    }
}

/* The r rows x (r, D) join clusters ix at distances m1: take's counts, float64 sums and
 * inertia (add_row, then the distance), the same additions in the same order.  SQ_KEEP keeps the inertia's chain of
 * dependent additions in this loop, where it overlaps the sums' memory updates: GCC would
 * otherwise split it into a loop of its own, which then runs at the adder's latency (1e6 x 2 x
 * 8 float32, one thread of a 2-core AVX2 EPYC: the whole assignment 10.8 -> 8.5 ms). */
static inline __attribute__((always_inline)) double FN(accumulate)(const REAL *restrict x, const int64_t D, int64_t r,
                                                                   const REAL *restrict m1, const IDX *restrict ix,
                                                                   int64_t *restrict pcounts, double *restrict psums,
                                                                   double acc)
{
    for (int64_t i = 0; i < r; i++) {
        FN(add_row)(x + i * D, D, ix[i], pcounts, psums);
        acc += (double)m1[i];
        SQ_KEEP(acc);
    }
    return acc;
}

/* Rows lo:hi of the direct assign + accumulate; returns their float64 inertia.
 * chunk rows at a time are transposed into xt (D, chunk); every loop then runs
 * element-wise over the chunk's rows (vectorised): the distance to centre k
 * (features added in order, in REAL) and the running (min, index). */
SQ_CLONES static double FN(assign_rows)(const REAL *restrict X, const REAL *restrict C, int64_t D, int64_t K,
                                        int64_t lo, int64_t hi, int64_t chunk, int64_t *restrict labels,
                                        REAL *restrict mind, double *restrict psums, int64_t *restrict pcounts,
                                        REAL *restrict xt, REAL *restrict d, REAL *restrict m1, IDX *restrict ix)
{
    double acc = 0.0;
    for (int64_t s = lo; s < hi; s += chunk) {
        const int64_t r = hi - s < chunk ? hi - s : chunk;
        FN(transpose_rows)(X, D, s, r, chunk, xt);
        FN(chunk_argmin)(xt, C, D, K, r, chunk, d, m1, ix, 0);
        for (int64_t i = 0; i < r; i++) {
            labels[s + i] = ix[i];
            mind[s + i] = m1[i];
        }
        const REAL *x = X + s * D;
        switch (D) { /* the feature loop unrolled for the fewest features */
        case 1: acc = FN(accumulate)(x, 1, r, m1, ix, pcounts, psums, acc); break;
        case 2: acc = FN(accumulate)(x, 2, r, m1, ix, pcounts, psums, acc); break;
        case 3: acc = FN(accumulate)(x, 3, r, m1, ix, pcounts, psums, acc); break;
        default: acc = FN(accumulate)(x, D, r, m1, ix, pcounts, psums, acc);
        }
    }
    return acc;
}

/* Rows lo:hi's nearest centre by the direct formula, labels and distances only (no sums): the
 * distances of assign_rows, and the index of the first smallest, NaN first (chunk_argmin).
 * For finite rows the labels and mind of assign_rows. */
SQ_CLONES static void FN(nearest_rows)(const REAL *restrict X, const REAL *restrict C, int64_t D, int64_t K, int64_t lo,
                                       int64_t hi, int64_t chunk, int64_t *restrict labels, REAL *restrict mind,
                                       REAL *restrict xt, REAL *restrict d, REAL *restrict m1, IDX *restrict ix)
{
    for (int64_t s = lo; s < hi; s += chunk) {
        const int64_t r = hi - s < chunk ? hi - s : chunk;
        FN(transpose_rows)(X, D, s, r, chunk, xt);
        FN(chunk_argmin)(xt, C, D, K, r, chunk, d, m1, ix, 1);
        for (int64_t i = 0; i < r; i++) {
            labels[s + i] = ix[i];
            mind[s + i] = m1[i];
        }
    }
}

/* Scratch of one assign_rows caller: xt (D, chunk), d, m1 (chunk,), ix (chunk,). */
static REAL *FN(scratch)(int64_t D, int64_t chunk)
{
    return (REAL *)malloc((size_t)chunk * ((size_t)D + 2) * sizeof(REAL) + (size_t)chunk * sizeof(IDX));
}

static double FN(assign_group)(const REAL *X, const REAL *C, int64_t D, int64_t K, int64_t lo, int64_t hi, int64_t chunk,
                               int64_t *labels, REAL *mind, double *psums, int64_t *pcounts, REAL *buf)
{
    REAL *xt = buf, *d = buf + D * chunk, *m1 = d + chunk;
    IDX *ix = (IDX *)(m1 + chunk);
    return FN(assign_rows)(X, C, D, K, lo, hi, chunk, labels, mind, psums, pcounts, xt, d, m1, ix);
}

/* Nearest centre of every row by the direct formula and per-group partials:
 * X (n, D), C (K, D), bounds (G+1,), psums (G, K, D), pcounts (G, K), pinert (G,).
 * Returns 0, or -1 when scratch memory could not be allocated. */
SQ_EXPORT int FN(assign_direct)(const REAL *X, const REAL *C, int64_t D, int64_t K, const int64_t *bounds, int64_t G,
                                int64_t chunk, int64_t *labels, REAL *mind, double *psums, int64_t *pcounts,
                                double *pinert, int nthreads)
{
    int err = 0;
    if (nthreads > 1 && G > 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) reduction(| : err)
        for (int64_t g = 0; g < G; g++) {
            REAL *buf = FN(scratch)(D, chunk);
            if (!buf) {
                err = 1;
                continue;
            }
            pinert[g] = FN(assign_group)(X, C, D, K, bounds[g], bounds[g + 1], chunk, labels, mind, psums + g * K * D,
                                         pcounts + g * K, buf);
            free(buf);
        }
    } else {
        REAL *buf = FN(scratch)(D, chunk);
        if (!buf)
            return -1;
        for (int64_t g = 0; g < G; g++)
            pinert[g] = FN(assign_group)(X, C, D, K, bounds[g], bounds[g + 1], chunk, labels, mind, psums + g * K * D,
                                         pcounts + g * K, buf);
        free(buf);
    }
    return err ? -1 : 0;
}

/* Every row's nearest centre by the direct formula (nearest_rows), rows in blocks of `chunk`
 * spread over the threads: labels (n,) and their distances mind (n,), without the (n, K)
 * matrix.  Each row's result depends on that row only, so the bytes never depend on the
 * thread count.  Returns 0, or -1 when scratch memory could not be allocated. */
SQ_EXPORT int FN(nearest_direct)(const REAL *X, int64_t n, const REAL *C, int64_t K, int64_t D, int64_t chunk,
                                 int64_t *labels, REAL *mind, int nthreads)
{
    const int64_t nb = (n + chunk - 1) / chunk;
    int err = 0;
#pragma omp parallel num_threads(nthreads > nb ? (int)(nb > 0 ? nb : 1) : nthreads) reduction(| : err)
    {
        REAL *buf = FN(scratch)(D, chunk);
        if (!buf)
            err = 1;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < nb; b++) {
            if (!buf)
                continue;
            REAL *xt = buf, *d = buf + D * chunk, *m1 = d + chunk;
            const int64_t lo = b * chunk, hi = lo + chunk < n ? lo + chunk : n;
            FN(nearest_rows)(X, C, D, K, lo, hi, chunk, labels, mind, xt, d, m1, (IDX *)(m1 + chunk));
        }
        free(buf);
    }
    return err ? -1 : 0;
}

/* One Lloyd iteration of a small problem (numba's update_assign_direct): Cn = sums / counts
 * (every count > 0), stats = (largest move, sum of squared moves, inertia), then the
 * assignment of X (n, D) to Cn as one group into labels/mind and psums (K, D) / pcounts (K,)
 * (zeroed here).  Returns the number of empty clusters, or -1 on allocation failure. */
SQ_EXPORT int64_t FN(update_assign)(const REAL *X, int64_t n, const REAL *C, int64_t K, int64_t D, const double *sums,
                                    const int64_t *counts, int64_t chunk, int64_t *labels, REAL *mind, REAL *Cn,
                                    double *psums, int64_t *pcounts, double *stats)
{
    double s2max = 0.0, s2sum = 0.0;
    for (int64_t k = 0; k < K; k++) {
        double s2 = 0.0;
        for (int64_t j = 0; j < D; j++) {
            Cn[k * D + j] = (REAL)(sums[k * D + j] / (double)counts[k]);
            const double t = (double)Cn[k * D + j] - (double)C[k * D + j];
            s2 += t * t;
        }
        s2sum += s2;
        if (s2 > s2max)
            s2max = s2;
    }
    memset(psums, 0, (size_t)(K * D) * sizeof(double));
    memset(pcounts, 0, (size_t)K * sizeof(int64_t));
    REAL *buf = FN(scratch)(D, chunk);
    if (!buf)
        return -1;
    const double inertia = FN(assign_group)(X, Cn, D, K, 0, n, chunk, labels, mind, psums, pcounts, buf);
    free(buf);
    int64_t empty = 0;
    for (int64_t k = 0; k < K; k++)
        empty += pcounts[k] == 0;
    stats[0] = sqrt(s2max);
    stats[1] = s2sum;
    stats[2] = inertia;
    return empty;
}

/* ---------------------------------------------------------------------- */
/* large D: argmin of a gemm block with the exact re-check of near ties     */
/* ---------------------------------------------------------------------- */

/* sum_j (x_j - c_j)^2 with the squares in REAL added in float64 over 8 fixed
 * lanes (the same bits on every instruction set, vectorised). */
SQ_CLONES static double FN(dist_row)(const REAL *restrict x, const REAL *restrict c, int64_t D)
{
    double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int64_t D8 = D - D % 8;
    for (int64_t j = 0; j < D8; j += 8)
        for (int u = 0; u < 8; u++) {
            const REAL t = x[j + u] - c[j + u];
            l[u] += (double)(t * t);
        }
    double acc = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
    for (int64_t j = D8; j < D; j++) {
        const REAL t = x[j] - c[j];
        acc += (double)(t * t);
    }
    return acc;
}

/* sum_j (x_j - m_j)^2 in float64 (only the near-tie bound uses it). */
SQ_CLONES static double FN(centred_norm)(const REAL *restrict x, const REAL *restrict m, int64_t D)
{
    double l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int64_t D8 = D - D % 8;
    for (int64_t j = 0; j < D8; j += 8)
        for (int u = 0; u < 8; u++) {
            const REAL t = x[j + u] - m[j + u];
            l[u] += (double)t * (double)t;
        }
    double acc = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
    for (int64_t j = D8; j < D; j++) {
        const double t = (double)x[j] - (double)m[j];
        acc += t * t;
    }
    return acc;
}

/* ---------------------------------------------------------------------- */
/* distance matrices                                                       */
/* ---------------------------------------------------------------------- */

/* out[i, j] = sum_d (X[i, d] - TT[d, j])^2 for rows lo:hi and columns j0:j1, features in order,
 * vectorised over j (each output row is updated once per feature). */
SQ_CLONES static void FN(sqdist_cols)(const REAL *restrict X, const REAL *restrict TT, REAL *restrict out, int64_t lo,
                                      int64_t hi, int64_t j0, int64_t j1, int64_t P, int64_t D)
{
    for (int64_t i = lo; i < hi; i++) {
        REAL *restrict o = out + i * P;
        const REAL x0 = X[i * D];
        for (int64_t j = j0; j < j1; j++) {
            const REAL t = x0 - TT[j];
            o[j] = t * t;
        }
        for (int64_t d = 1; d < D; d++) {
            const REAL xd = X[i * D + d];
            const REAL *restrict td = TT + d * P;
            for (int64_t j = j0; j < j1; j++) {
                const REAL t = xd - td[j];
                o[j] += t * t;
            }
        }
    }
}

/* Tile of the distance matrix kept in registers: SQ_DR rows x SQ_DC vectors of columns. */
#define SQ_DR 2
#define SQ_DC 4

/* out[i, j] = sum_d (X[i, d] - TT[d, j])^2 for rows lo:hi: the same sums, in the same order and
 * rounding, as sqdist_cols (so the same bits), but a tile of SQ_DR rows x SQ_DC vectors stays in
 * registers over all D features -- each vector of TT loaded once for the tile's rows, the tile
 * stored once -- instead of every output row being read and written once per feature (4096 x
 * 1024 x 16 float32 on one thread of a 2-core AVX2 EPYC: 10.2 -> 7.8 ms, medians of 30 calls;
 * 2 rows x 4 vectors fits AVX2's 16 registers, and 1 x 8, 2 x 6 or 3 x 4 measured no better).
 * Columns and rows left over take sqdist_cols. */
SQ_CLONES static void FN(sqdist_rows)(const REAL *restrict X, const REAL *restrict TT, REAL *restrict out, int64_t lo,
                                      int64_t hi, int64_t P, int64_t D)
{
    const int64_t W = SQ_DC * SQ_RL; /* columns per tile */
    int64_t i = lo;
    for (; i + SQ_DR <= hi; i += SQ_DR) {
        int64_t j = 0;
        for (; j + W <= P; j += W) {
            FN(rvec) acc[SQ_DR][SQ_DC];
            for (int r = 0; r < SQ_DR; r++) {
                const REAL x0 = X[(i + r) * D];
                for (int c = 0; c < SQ_DC; c++) {
                    const FN(rvec) t = x0 - *(const FN(rvec) *)(TT + j + c * SQ_RL);
                    acc[r][c] = t * t;
                }
            }
            for (int64_t d = 1; d < D; d++) {
                FN(rvec) td[SQ_DC];
                for (int c = 0; c < SQ_DC; c++)
                    td[c] = *(const FN(rvec) *)(TT + d * P + j + c * SQ_RL);
                for (int r = 0; r < SQ_DR; r++) {
                    const REAL xd = X[(i + r) * D + d];
                    for (int c = 0; c < SQ_DC; c++) {
                        const FN(rvec) t = xd - td[c];
                        acc[r][c] = acc[r][c] + t * t;
                    }
                }
            }
            for (int r = 0; r < SQ_DR; r++)
                for (int c = 0; c < SQ_DC; c++)
                    *(FN(rvec) *)(out + (i + r) * P + j + c * SQ_RL) = acc[r][c];
        }
        if (j < P)
            FN(sqdist_cols)(X, TT, out, i, i + SQ_DR, j, P, P, D);
    }
    if (i < hi)
        FN(sqdist_cols)(X, TT, out, i, hi, 0, P, P, D);
}

SQ_EXPORT void FN(sqdist_direct)(const REAL *X, const REAL *TT, REAL *out, int64_t n, int64_t P, int64_t D, int nthreads)
{
    if (nthreads > 1 && n > 1) {
        const int64_t step = 8;
#pragma omp parallel for schedule(static) num_threads(nthreads)
        for (int64_t lo = 0; lo < n; lo += step)
            FN(sqdist_rows)(X, TT, out, lo, lo + step < n ? lo + step : n, P, D);
    } else {
        FN(sqdist_rows)(X, TT, out, 0, n, P, D);
    }
}

/* Centre T (P, D) on the mean of its finite rows; Ta = [-2 (T - c), 1, |T - c|^2] (P, D+2),
 * nt (P,), finite (P,) = rows whose 4 nt is finite.  Returns how many are. */
SQ_EXPORT int64_t FN(prepare_right)(const REAL *T, int64_t P, int64_t D, REAL *c, REAL *Ta, REAL *nt, uint8_t *finite,
                                    double *acc, int nthreads)
{
    int64_t nf = 0;
    for (int64_t j = 0; j < D; j++)
        acc[j] = 0.0;
    for (int64_t i = 0; i < P; i++) {
        int ok = 1;
        for (int64_t j = 0; j < D; j++)
            ok &= isfinite(T[i * D + j]) != 0;
        finite[i] = (uint8_t)ok;
        if (ok) {
            nf++;
            for (int64_t j = 0; j < D; j++)
                acc[j] += T[i * D + j];
        }
    }
    for (int64_t j = 0; j < D; j++)
        c[j] = nf ? (REAL)(acc[j] / (double)nf) : (REAL)0;
    int64_t count = 0;
    /* rows are independent here (the mean above stays sequential): the same bits on any thread count */
#pragma omp parallel for schedule(static, 64) num_threads(nthreads) if (nthreads > 1) reduction(+ : count)
    for (int64_t i = 0; i < P; i++) {
        double s = 0.0;
        REAL *ta = Ta + i * (D + 2);
        for (int64_t j = 0; j < D; j++) {
            const REAL v = T[i * D + j] - c[j];
            ta[j] = -2 * v;
            s += v * v;
        }
        ta[D] = 1;
        ta[D + 1] = (REAL)s;
        nt[i] = ta[D + 1];
        const REAL q = nt[i] + nt[i];
        finite[i] = isfinite(q + q) != 0;
        count += finite[i];
    }
    return count;
}

/* Rows lo:hi of augment; returns how many of them are unsafe. */
static int64_t FN(augment_rows)(const REAL *X, const REAL *c, REAL *Xa, REAL *nx, int64_t lo, int64_t hi, int64_t D)
{
    int64_t bad = 0;
    for (int64_t i = lo; i < hi; i++) {
        double s = 0.0;
        REAL *xa = Xa + i * (D + 2);
        for (int64_t j = 0; j < D; j++) {
            const REAL v = X[i * D + j] - c[j];
            xa[j] = v;
            s += v * v;
        }
        xa[D] = (REAL)s;
        xa[D + 1] = 1;
        nx[i] = xa[D];
        const REAL q = nx[i] + nx[i];
        bad += !isfinite(q + q);
    }
    return bad;
}

/* Xa[:, :D] = X - c, Xa[:, D] = nx = |X - c|^2, Xa[:, D+1] = 1; returns the rows whose 4 nx is not
 * finite.  Rows are independent (the same bits on any thread count). */
SQ_EXPORT int64_t FN(augment)(const REAL *X, const REAL *c, REAL *Xa, REAL *nx, int64_t n, int64_t D, int nthreads)
{
    int64_t bad = 0;
    if (nthreads > 1 && n > 1) {
        const int64_t step = 64;
#pragma omp parallel for schedule(static) num_threads(nthreads) reduction(+ : bad)
        for (int64_t lo = 0; lo < n; lo += step)
            bad += FN(augment_rows)(X, c, Xa, nx, lo, lo + step < n ? lo + step : n, D);
    } else {
        bad = FN(augment_rows)(X, c, Xa, nx, 0, n, D);
    }
    return bad;
}

/* The cancellation test of gemm_fixup is "(double)d[i, j] < tau * nx[i] + tnt[j]" in float64.
 * A block is first screened in REAL against thresholds rounded up (SQ_UP: 1 + 2^-16 for
 * float32, exactly 1 for float64, where the screen is the test itself): nonnegative terms
 * rounded up by 2^-16 (FN(up): at least that, subnormals included) and added in float32 (error
 * 2^-24) stay above the float64 threshold,
 * so a row that passes the screen has no hit, and only screened rows take the exact test. */
#define SQ_UP (sizeof(REAL) == 4 ? 1.0 + 0x1p-16 : 1.0)

/* v * SQ_UP converted to REAL rounding up (never below v * SQ_UP, also in the subnormal range). */
static REAL FN(up)(double v)
{
    const double w = v * SQ_UP;
    const REAL r = (REAL)w;
    if (!((double)r < w))
        return r;
    return sizeof(REAL) == 4 ? (REAL)nextafterf((float)r, INFINITY) : (REAL)nextafter((double)r, INFINITY);
}

/* tup[j] = tnt[j] rounded up for the screen. */
static void FN(screen_cols)(const REAL *tnt, REAL *tup, int64_t P)
{
    for (int64_t j = 0; j < P; j++)
        tup[j] = FN(up)((double)tnt[j]);
}

/* Exact test and direct recomputation of row i (with ti = tau * nx[i]); returns the hits. */
static int64_t FN(fix_row)(REAL *restrict row, double ti, const REAL *restrict tnt, const REAL *restrict x,
                           const REAL *restrict T, int64_t P, int64_t D)
{
    int64_t hits = 0;
    for (int64_t j = 0; j < P; j++)
        hits += (double)row[j] < ti + (double)tnt[j];
    if (!hits)
        return 0;
    for (int64_t j = 0; j < P; j++)
        if ((double)row[j] < ti + (double)tnt[j]) {
            double v = 0.0;
            for (int64_t k = 0; k < D; k++) {
                const REAL t = x[k] - T[j * D + k];
                v += t * t;
            }
            row[j] = (REAL)v;
        }
    return hits;
}

/* Whether any row[j] < tiu + tup[j] (the screen; branch-free, vectorised). */
SQ_CLONES static int FN(screen_row)(const REAL *restrict row, REAL tiu, const REAL *restrict tup, int64_t P)
{
    int any = 0;
    for (int64_t j = 0; j < P; j++)
        any |= row[j] < tiu + tup[j];
    return any;
}

/* First index of the smallest entry of row (P,), the first NaN if any (as torch.min); scalar. */
static int64_t FN(argmin_scan)(const REAL *row, int64_t P)
{
    int64_t j = 0;
    for (int64_t k = 1; k < P && row[j] == row[j]; k++)
        if (row[k] < row[j] || row[k] != row[k])
            j = k;
    return j;
}

/* Smallest entry of row (P,) and the index of its first occurrence, NaN first (as torch's min).
 * Two vectors of lanes keep (min, first index) with a strict "<"; z collects v - v, which is
 * NaN only for NaN or infinite entries: then the exact scalar scan decides. */
SQ_CLONES static REAL FN(row_argmin)(const REAL *restrict row, int64_t P, int64_t *at)
{
    const int64_t W = 2 * SQ_RL, PW = P - P % W;
    if (PW == 0 || (int64_t)(IDX)P != P) {
        *at = FN(argmin_scan)(row, P);
        return row[*at];
    }
    FN(rvec) a0 = *(const FN(rvec) *)row, a1 = *(const FN(rvec) *)(row + SQ_RL);
    FN(rvec) z0 = a0 - a0, z1 = a1 - a1;
    FN(ivec) i0, i1, c0, c1, step;
    for (int u = 0; u < SQ_RL; u++) {
        i0[u] = (IDX)u;
        i1[u] = (IDX)(u + SQ_RL);
        step[u] = (IDX)W;
    }
    c0 = i0;
    c1 = i1;
    for (int64_t j = W; j < PW; j += W) {
        const FN(rvec) v0 = *(const FN(rvec) *)(row + j), v1 = *(const FN(rvec) *)(row + j + SQ_RL);
        c0 += step;
        c1 += step;
        const FN(ivec) m0 = (FN(ivec))(v0 < a0), m1 = (FN(ivec))(v1 < a1);
        z0 += v0 - v0;
        z1 += v1 - v1;
        a0 = (FN(rvec))(((FN(ivec))v0 & m0) | ((FN(ivec))a0 & ~m0));
        a1 = (FN(rvec))(((FN(ivec))v1 & m1) | ((FN(ivec))a1 & ~m1));
        i0 = (c0 & m0) | (i0 & ~m0);
        i1 = (c1 & m1) | (i1 & ~m1);
    }
    REAL zz = 0;
    for (int u = 0; u < SQ_RL; u++)
        zz += z0[u] + z1[u];
    for (int64_t j = PW; j < P; j++)
        zz += row[j] - row[j];
    if (zz != zz) { /* a NaN or an infinity somewhere */
        *at = FN(argmin_scan)(row, P);
        return row[*at];
    }
    REAL m = a0[0];
    int64_t j = i0[0];
    for (int u = 0; u < SQ_RL; u++) {
        if (a0[u] < m || (a0[u] == m && i0[u] < j)) {
            m = a0[u];
            j = i0[u];
        }
        if (a1[u] < m || (a1[u] == m && i1[u] < j)) {
            m = a1[u];
            j = i1[u];
        }
    }
    for (int64_t k = PW; k < P; k++)
        if (row[k] < m) {
            m = row[k];
            j = k;
        }
    *at = j;
    return m;
}

/* Rows lo:hi of gemm_min: the fix-up of each row, then (dmin not NULL) its minimum and first
 * index; returns the number of recomputed entries. */
static int64_t FN(fixmin_rows)(REAL *d, const REAL *nx, const REAL *tnt, const REAL *tup, double tau, const REAL *X,
                               const REAL *T, int64_t lo, int64_t hi, int64_t P, int64_t D, REAL *dmin, int64_t *imin)
{
    int64_t cnt = 0;
    for (int64_t i = lo; i < hi; i++) {
        REAL *row = d + i * P;
        const double ti = tau * (double)nx[i];
        if (FN(screen_row)(row, FN(up)(ti), tup, P))
            cnt += FN(fix_row)(row, ti, tnt, X + i * D, T, P, D);
        if (dmin)
            dmin[i] = FN(row_argmin)(row, P, imin + i);
    }
    return cnt;
}

/* Recompute, in place, the entries of a gemm block d (n, P) below tau * nx[i] + tnt[j] by the
 * direct formula; then (dmin not NULL) every row's minimum dmin (n,) and the index of its first
 * occurrence imin (n,) (NaN first, as torch.min).  Returns how many entries were recomputed,
 * or -1 when scratch memory could not be allocated. */
SQ_EXPORT int64_t FN(gemm_min)(REAL *d, const REAL *nx, const REAL *tnt, double tau, const REAL *X, const REAL *T,
                               int64_t n, int64_t P, int64_t D, REAL *dmin, int64_t *imin, int nthreads)
{
    REAL *tup = (REAL *)malloc((size_t)(P > 0 ? P : 1) * sizeof(REAL));
    if (!tup)
        return -1;
    FN(screen_cols)(tnt, tup, P);
    int64_t cnt = 0;
    if (nthreads > 1 && n > 1) {
        const int64_t step = 16;
#pragma omp parallel for schedule(static) num_threads(nthreads) reduction(+ : cnt)
        for (int64_t lo = 0; lo < n; lo += step)
            cnt += FN(fixmin_rows)(d, nx, tnt, tup, tau, X, T, lo, lo + step < n ? lo + step : n, P, D, dmin, imin);
    } else {
        cnt = FN(fixmin_rows)(d, nx, tnt, tup, tau, X, T, 0, n, P, D, dmin, imin);
    }
    free(tup);
    return cnt;
}

/* gemm_min without the minimum. */
SQ_EXPORT int64_t FN(gemm_fixup)(REAL *d, const REAL *nx, const REAL *tnt, double tau, const REAL *X, const REAL *T,
                                 int64_t n, int64_t P, int64_t D, int nthreads)
{
    return FN(gemm_min)(d, nx, tnt, tau, X, T, n, P, D, NULL, NULL, nthreads);
}

/* ---------------------------------------------------------------------- */
/* large D, transposed products: element-wise running (min, second, index) */
/* ---------------------------------------------------------------------- */

#define SQ_TCHUNK 2048

/* One centre's value v (index k) into a running (smallest a, second smallest b with
 * multiplicity, index x of the first smallest). */
static inline __attribute__((always_inline)) void FN(min2_step)(REAL v, IDX k, REAL *a, REAL *b, IDX *x)
{
    const REAL hi = v > *a ? v : *a;
    *b = *b < hi ? *b : hi;
    *x = v < *a ? k : *x;
    *a = v < *a ? v : *a;
}

/* Running (smallest, second smallest with multiplicity, index of the first smallest) of the
 * columns c0:c0+r of GT (K, ld), element-wise over the columns (vectorised), centres in order. */
SQ_CLONES static void FN(col_min2)(const REAL *restrict GT, int64_t ld, int64_t K, int64_t c0, int64_t r,
                                   REAL *restrict m1, REAL *restrict m2, IDX *restrict ix)
{
    const REAL *g0 = GT + c0;
    for (int64_t i = 0; i < r; i++) {
        m1[i] = g0[i];
        m2[i] = (REAL)INFINITY;
        ix[i] = 0;
    }
    int64_t k = 1;
    /* four centres per sweep (in order, so the same result): a quarter of the loads and
     * stores of the running triple */
    for (; k + 3 < K; k += 4) {
        const REAL *restrict g1 = GT + k * ld + c0, *restrict g2 = g1 + ld, *restrict g3 = g2 + ld,
                             *restrict g4 = g3 + ld;
        const IDX k1 = (IDX)k, k2 = (IDX)(k + 1), k3 = (IDX)(k + 2), k4 = (IDX)(k + 3);
        for (int64_t i = 0; i < r; i++) {
            REAL a = m1[i], b = m2[i];
            IDX x = ix[i];
            FN(min2_step)(g1[i], k1, &a, &b, &x);
            FN(min2_step)(g2[i], k2, &a, &b, &x);
            FN(min2_step)(g3[i], k3, &a, &b, &x);
            FN(min2_step)(g4[i], k4, &a, &b, &x);
            m1[i] = a;
            m2[i] = b;
            ix[i] = x;
        }
    }
    for (; k < K; k++) {
        const REAL *restrict gk = GT + k * ld + c0;
        const IDX kk = (IDX)k;
        for (int64_t i = 0; i < r; i++)
            FN(min2_step)(gk[i], kk, m1 + i, m2 + i, ix + i);
    }
}

/* Rows lo:hi (columns of GT) of one block: the winner by the products when the second
 * smallest is beyond the near-tie bound, else by the direct formula among the candidates. */
static double FN(gemm_rows_t)(const REAL *GT, int64_t ld, const REAL *X, const REAL *m, const REAL *C, int64_t K,
                              int64_t D, double ncmax, double gamma, int64_t lo, int64_t hi, int64_t *labels,
                              REAL *mind, double *psums, int64_t *pcounts, REAL *m1, REAL *m2, IDX *ix)
{
    double acc = 0.0;
    for (int64_t c0 = lo; c0 < hi; c0 += SQ_TCHUNK) {
        const int64_t r = hi - c0 < SQ_TCHUNK ? hi - c0 : SQ_TCHUNK;
        FN(col_min2)(GT, ld, K, c0, r, m1, m2, ix);
        for (int64_t i = 0; i < r; i++) {
            const int64_t xi = c0 + i;
            const REAL *x = X + xi * D;
            const double lim = (double)m1[i] + 2.0 * gamma * (FN(centred_norm)(x, m, D) + ncmax);
            double best;
            int64_t bk;
            if ((double)m2[i] > lim) { /* one candidate (almost every row) */
                bk = ix[i];
                best = FN(dist_row)(x, C + bk * D, D);
            } else {
                bk = FN(near_tie)(x, C, K, D, lim, GT + xi, ld, NULL, NULL, 0, &best);
            }
            acc += FN(take)(x, D, bk, best, labels + xi, mind + xi, pcounts, psums);
        }
    }
    return acc;
}

/* One block's assignment from its transposed products GT (K, ld) (rows of the block are
 * the columns 0..n-1); sub (S+1,) fixed subgroup boundaries; partials persist across blocks.
 * In the same parallel region, the next block's rows Xn (nn, D) are centred into the
 * product's left factor xa (nn, D+1) = [Xn - m, 1] (one thread barrier less per block;
 * plain IEEE subtractions, the same bits as any other way of computing them). */
SQ_EXPORT int FN(argmin_gemm_t)(const REAL *GT, int64_t ld, const REAL *X, const REAL *m, const REAL *C, int64_t K,
                                int64_t D, double ncmax, double gamma, const int64_t *sub, int64_t S, int64_t *labels,
                                REAL *mind, double *psums, int64_t *pcounts, double *pinert, const REAL *Xn,
                                int64_t nn, REAL *xa, int nthreads)
{
    int err = 0;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1 && (S > 1 || nn > 1)) reduction(| : err)
    {
#pragma omp for schedule(dynamic, 1) nowait
        for (int64_t s = 0; s < S; s++) {
            REAL *buf = (REAL *)malloc(SQ_TCHUNK * (2 * sizeof(REAL) + sizeof(IDX)));
            if (!buf) {
                err = 1;
                continue;
            }
            pinert[s] += FN(gemm_rows_t)(GT, ld, X, m, C, K, D, ncmax, gamma, sub[s], sub[s + 1], labels, mind,
                                         psums + s * K * D, pcounts + s * K, buf, buf + SQ_TCHUNK,
                                         (IDX *)(buf + 2 * SQ_TCHUNK));
            free(buf);
        }
#pragma omp for schedule(dynamic, 256)
        for (int64_t i = 0; i < nn; i++) {
            REAL *restrict a = xa + i * (D + 1);
            const REAL *restrict x = Xn + i * D;
            for (int64_t j = 0; j < D; j++)
                a[j] = x[j] - m[j];
            a[D] = 1;
        }
    }
    return err ? -1 : 0;
}

/* ---------------------------------------------------------------------- */
/* large D, fused: products of a cache-resident chunk, never stored        */
/* ---------------------------------------------------------------------- */

#define SQ_FCHUNK 128
#define SQ_FCENTRES 6 /* centres per sweep of the fused step */

/* e_k of row i of a chunk: sum_j A[k, j] * xt[j, i] over j = 0..D (xt[D, i] = 1), in the
 * order of the fused loop below (its bits, or within the same error bound where that loop
 * fuses multiply-adds: either bounds the candidates of a near tie alike). */
static REAL FN(e_of)(const REAL *A, int64_t D, int64_t k, const REAL *xt, int64_t i)
{
    const REAL *a = A + k * (D + 1);
    REAL e = a[0] * xt[i];
    for (int64_t j = 1; j <= D; j++)
        e += a[j] * xt[j * SQ_FCHUNK + i];
    return e;
}

static int64_t FN(near_tie)(const REAL *x, const REAL *C, int64_t K, int64_t D, double lim, const REAL *e, int64_t es,
                            const REAL *A, const REAL *xt, int64_t xi, double *best)
{
    const int every = !(lim < INFINITY);
    int64_t bk = -1;
    *best = 0.0;
    for (int64_t k = 0; k < K; k++)
        if (every || (double)(e ? e[k * es] : FN(e_of)(A, D, k, xt, xi)) <= lim) {
            const double dk = FN(dist_row)(x, C + k * D, D);
            if (bk < 0 || dk < *best) {
                *best = dk;
                bk = k;
            }
        }
    return bk;
}

/* One chunk of r rows, transposed and centred in xt (D+1, SQ_FCHUNK): the running
 * (min, second min, index) of e_k over the centres, SQ_FCENTRES centres per sweep.  The e_k only
 * screen: the label is the index of the smallest when the second smallest is beyond the
 * error bound (gamma covers these products with or without fused multiply-adds), else the
 * direct formula decides among the candidates; distances are always the direct formula's. */
SQ_FMA_CLONES static void FN(fused_min2)(const REAL *restrict A, int64_t K, int64_t D, const REAL *restrict xt, int64_t r,
                                     REAL *restrict acc, REAL *restrict m1, REAL *restrict m2, IDX *restrict ix)
{
    for (int64_t i = 0; i < r; i++) {
        m1[i] = (REAL)INFINITY;
        m2[i] = (REAL)INFINITY;
        ix[i] = -1;
    }
    for (int64_t k0 = 0; k0 < K; k0 += SQ_FCENTRES) {
        const int64_t nk = K - k0 < SQ_FCENTRES ? K - k0 : SQ_FCENTRES;
        const REAL *c[SQ_FCENTRES];
        for (int64_t u = 0; u < SQ_FCENTRES; u++) /* past K: the first centre again (not read back) */
            c[u] = A + (k0 + (u < nk ? u : 0)) * (D + 1);
        /* 2 vectors of rows x 6 centres of accumulators stay in registers over the features */
        for (int64_t i0 = 0; i0 < r; i0 += 2 * SQ_RL) {
            FN(rvec) xa = *(const FN(rvec) *)(xt + i0), xb = *(const FN(rvec) *)(xt + i0 + SQ_RL);
            FN(rvec) p[SQ_FCENTRES], q[SQ_FCENTRES]; /* constant trip counts: unrolled, in registers */
            for (int u = 0; u < SQ_FCENTRES; u++) {
                p[u] = c[u][0] * xa;
                q[u] = c[u][0] * xb;
            }
            for (int64_t j = 1; j <= D; j++) {
                const REAL *xj = xt + j * SQ_FCHUNK + i0;
                xa = *(const FN(rvec) *)xj;
                xb = *(const FN(rvec) *)(xj + SQ_RL);
                for (int u = 0; u < SQ_FCENTRES; u++) {
                    p[u] += c[u][j] * xa;
                    q[u] += c[u][j] * xb;
                }
            }
            for (int u = 0; u < SQ_FCENTRES; u++) {
                *(FN(rvec) *)(acc + u * SQ_FCHUNK + i0) = p[u];
                *(FN(rvec) *)(acc + u * SQ_FCHUNK + i0 + SQ_RL) = q[u];
            }
        }
        if (nk == SQ_FCENTRES) { /* a row's running triple in registers over the sweep's centres (vectorised;
                                  * written out: a u-loop here measured 3 % slower at 1e5 x 16 x 1024) */
            const IDX kk = (IDX)k0;
            for (int64_t i = 0; i < r; i++) {
                REAL a = m1[i], b = m2[i];
                IDX x = ix[i];
                FN(min2_step)(acc[i], kk, &a, &b, &x);
                FN(min2_step)(acc[SQ_FCHUNK + i], kk + 1, &a, &b, &x);
                FN(min2_step)(acc[2 * SQ_FCHUNK + i], kk + 2, &a, &b, &x);
                FN(min2_step)(acc[3 * SQ_FCHUNK + i], kk + 3, &a, &b, &x);
                FN(min2_step)(acc[4 * SQ_FCHUNK + i], kk + 4, &a, &b, &x);
                FN(min2_step)(acc[5 * SQ_FCHUNK + i], kk + 5, &a, &b, &x);
                m1[i] = a;
                m2[i] = b;
                ix[i] = x;
            }
        } else {
            for (int64_t u = 0; u < nk; u++)
                for (int64_t i = 0; i < r; i++)
                    FN(min2_step)(acc[u * SQ_FCHUNK + i], (IDX)(k0 + u), m1 + i, m2 + i, ix + i);
        }
    }
}

/* Rows lo:hi of one group; returns their float64 inertia. */
static double FN(fused_rows)(const REAL *X, const REAL *m, const REAL *A, const REAL *C, int64_t K, int64_t D,
                             double ncmax, double gamma, int64_t lo, int64_t hi, int64_t *labels, REAL *mind,
                             double *psums, int64_t *pcounts, REAL *buf)
{
    REAL *xt = buf, *acc = xt + (D + 1) * SQ_FCHUNK, *m1 = acc + SQ_FCENTRES * SQ_FCHUNK, *m2 = m1 + SQ_FCHUNK;
    IDX *ix = (IDX *)(m2 + SQ_FCHUNK);
    double nxs[SQ_FCHUNK];
    double total = 0.0;
    for (int64_t s = lo; s < hi; s += SQ_FCHUNK) {
        const int64_t r = hi - s < SQ_FCHUNK ? hi - s : SQ_FCHUNK;
        for (int64_t i = 0; i < r; i++) {
            const REAL *x = X + (s + i) * D;
            for (int64_t j = 0; j < D; j++)
                xt[j * SQ_FCHUNK + i] = x[j] - m[j];
            xt[D * SQ_FCHUNK + i] = 1;
            nxs[i] = FN(centred_norm)(x, m, D);
        }
        FN(fused_min2)(A, K, D, xt, r, acc, m1, m2, ix);
        for (int64_t i = 0; i < r; i++) {
            const int64_t xi = s + i;
            const REAL *x = X + xi * D;
            const double lim = (double)m1[i] + 2.0 * gamma * (nxs[i] + ncmax);
            double best;
            int64_t bk;
            if ((double)m2[i] > lim && ix[i] >= 0) { /* one candidate (almost every row) */
                bk = ix[i];
                best = FN(dist_row)(x, C + bk * D, D);
            } else {
                bk = FN(near_tie)(x, C, K, D, lim, NULL, 0, A, xt, i, &best);
            }
            total += FN(take)(x, D, bk, best, labels + xi, mind + xi, pcounts, psums);
        }
    }
    return total;
}

/* Large-D assign + accumulate without a stored product matrix: X (n, D), m (D,) centring
 * vector, A (K, D+1) = [-2 c_c, |c_c|^2], C (K, D) original centres; groups as assign_direct. */
SQ_EXPORT int FN(assign_fused)(const REAL *X, const REAL *m, const REAL *A, const REAL *C, int64_t K, int64_t D,
                               double ncmax, double gamma, const int64_t *bounds, int64_t G, int64_t *labels,
                               REAL *mind, double *psums, int64_t *pcounts, double *pinert, int nthreads)
{
    const size_t bytes = (size_t)SQ_FCHUNK * (((size_t)D + 1 + SQ_FCENTRES + 2) * sizeof(REAL) + sizeof(IDX));
    int err = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) if (nthreads > 1 && G > 1) reduction(| : err)
    for (int64_t g = 0; g < G; g++) {
        REAL *buf = (REAL *)calloc(1, bytes); /* zeroed: the padding columns of a short chunk stay finite */
        if (!buf) {
            err = 1;
            continue;
        }
        pinert[g] = FN(fused_rows)(X, m, A, C, K, D, ncmax, gamma, bounds[g], bounds[g + 1], labels, mind,
                                   psums + g * K * D, pcounts + g * K, buf);
        free(buf);
    }
    return err ? -1 : 0;
}
