/* threadpool.c — fixed pool of pthreads with a cheap "run on all and wait".
 *
 * Dispatch protocol (one dispatcher at a time; qlm_pool_run is not reentrant):
 *   - the caller stores fn/ctx, sets `pending` to the number of workers, then bumps the
 *     generation counter `gen` (release), and broadcasts the condvar only if some worker is
 *     asleep;
 *   - a worker spins a short while watching `gen`; if nothing comes it sleeps on the condvar.
 *     Seeing a new gen (acquire) it runs fn(ctx, ith, n) and decrements `pending` (release);
 *   - the caller runs fn(ctx, 0, n) itself, then spins (and eventually sleeps) until pending == 0.
 * The decode loop dispatches ~10 tasks per layer per token a few microseconds apart, so the
 * workers almost always catch the next dispatch while still spinning: no syscalls then.  The
 * spin is bounded so an idle pool (or an oversubscribed machine) does not burn the CPU. */
#include "kernels/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* Waiting is done in three stages: SPIN_PAUSE pause instructions (a few microseconds: the
 * common case in decode), then up to SPIN_YIELD sched_yield() calls (lets a thread that shares
 * our core run, which matters when there are more threads than cores), then the condvar. */
#define SPIN_PAUSE 2000
#define SPIN_YIELD 200
#define SPIN_ITERS (SPIN_PAUSE + SPIN_YIELD)

static inline void backoff(int i) {
  if (i < SPIN_PAUSE) cpu_relax();
  else sched_yield();
}

typedef struct worker {
  struct qlm_pool *pool;
  int ith;
  pthread_t thread;
} worker;

struct qlm_pool {
  int n;                     /* threads in total, caller included */
  worker *workers;           /* [n - 1] */
  qlm_task_fn fn;            /* current task (written before gen is bumped) */
  void *ctx;
  atomic_uint gen;           /* generation: bumped once per dispatch */
  atomic_int pending;        /* workers still running the current generation */
  atomic_int quit;
  pthread_mutex_t mu;        /* guards the sleeping counters and the condvars */
  pthread_cond_t cv_work;    /* workers wait here for a new generation */
  pthread_cond_t cv_done;    /* the caller waits here for pending == 0 */
  int n_sleeping;            /* workers blocked on cv_work (under mu) */
};

static void *worker_main(void *arg) {
  worker *w = arg;
  qlm_pool *p = w->pool;
  /* Generation 0 is the one the pool was created with; reading gen here instead would race with
   * a first dispatch that happens before this thread gets scheduled, and that dispatch would be lost. */
  unsigned seen = 0;
  for (;;) {
    unsigned g = seen;
    for (int i = 0; i < SPIN_ITERS; i++) {
      g = atomic_load_explicit(&p->gen, memory_order_acquire);
      if (g != seen || atomic_load_explicit(&p->quit, memory_order_relaxed)) break;
      backoff(i);
    }
    if (g == seen) {
      /* Checking gen under the mutex pairs with the dispatcher bumping gen before it locks:
       * either we see the new gen here, or we are already waiting when it broadcasts. */
      pthread_mutex_lock(&p->mu);
      p->n_sleeping++;
      while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen &&
             !atomic_load_explicit(&p->quit, memory_order_relaxed))
        pthread_cond_wait(&p->cv_work, &p->mu);
      p->n_sleeping--;
      pthread_mutex_unlock(&p->mu);
    }
    if (atomic_load_explicit(&p->quit, memory_order_acquire)) break;
    seen = g;
    p->fn(p->ctx, w->ith, p->n);
    if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
      /* last one out wakes the caller in case it went to sleep */
      pthread_mutex_lock(&p->mu);
      pthread_cond_signal(&p->cv_done);
      pthread_mutex_unlock(&p->mu);
    }
  }
  return NULL;
}

qlm_pool *qlm_pool_new(int n_threads) {
  if (n_threads < 1) n_threads = 1;
  if (n_threads > 1024) n_threads = 1024;
  qlm_pool *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->n = n_threads;
  atomic_init(&p->gen, 0);
  atomic_init(&p->pending, 0);
  atomic_init(&p->quit, 0);
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv_work, NULL);
  pthread_cond_init(&p->cv_done, NULL);
  if (n_threads == 1) return p;
  p->workers = calloc((size_t)n_threads - 1, sizeof *p->workers);
  if (!p->workers) {
    qlm_pool_free(p);
    return NULL;
  }
  for (int i = 1; i < n_threads; i++) {
    worker *w = &p->workers[i - 1];
    w->pool = p;
    w->ith = i;
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
      p->n = i; /* run with the threads we got; free() joins exactly these */
      break;
    }
  }
  return p;
}

void qlm_pool_free(qlm_pool *p) {
  if (!p) return;
  if (p->workers) {
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->quit, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++) pthread_join(p->workers[i - 1].thread, NULL);
    free(p->workers);
  }
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv_work);
  pthread_cond_destroy(&p->cv_done);
  free(p);
}

int qlm_pool_size(const qlm_pool *p) { return p ? p->n : 1; }

void qlm_pool_run(qlm_pool *p, qlm_task_fn fn, void *ctx) {
  if (!p || p->n == 1) {
    fn(ctx, 0, 1);
    return;
  }
  p->fn = fn;
  p->ctx = ctx;
  atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
  pthread_mutex_lock(&p->mu);
  if (p->n_sleeping > 0) pthread_cond_broadcast(&p->cv_work);
  pthread_mutex_unlock(&p->mu);

  fn(ctx, 0, p->n);

  for (int i = 0; i < SPIN_ITERS; i++) {
    if (atomic_load_explicit(&p->pending, memory_order_acquire) == 0) return;
    backoff(i);
  }
  pthread_mutex_lock(&p->mu);
  while (atomic_load_explicit(&p->pending, memory_order_acquire) != 0) pthread_cond_wait(&p->cv_done, &p->mu);
  pthread_mutex_unlock(&p->mu);
}
