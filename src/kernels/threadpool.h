/* threadpool.h — a fixed pool of worker threads with low dispatch overhead.
 * Threads are created once; qlm_pool_run wakes them, runs fn(ctx, i, n) for i in [0, n) (the
 * calling thread takes part) and returns when all are done. */
#ifndef QLM_THREADPOOL_H
#define QLM_THREADPOOL_H

typedef struct qlm_pool qlm_pool;
typedef void (*qlm_task_fn)(void *ctx, int ith, int nth);

qlm_pool *qlm_pool_new(int n_threads); /* n_threads total including the caller; 1 = no workers */
void qlm_pool_free(qlm_pool *p);
int qlm_pool_size(const qlm_pool *p);
/* Run fn(ctx, ith, nth) on every thread (ith = 0..nth-1) and wait. pool may be NULL (runs fn(ctx,0,1)). */
void qlm_pool_run(qlm_pool *p, qlm_task_fn fn, void *ctx);

#endif
