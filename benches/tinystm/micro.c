/*
 * micro.c -- single-threaded TinySTM micro-benchmark (uncontended fast path).
 *
 * Measures median ns/transaction over RUNS runs of N transactions each:
 *   a)  read-only tx, 1 word           (attr read_only=1, TinySTM's RO hint: no read-set)
 *   a2) same, but default attrs        (read_only=0: the read is logged in the read set)
 *   b)  read + write 1 word (increment)
 *   c)  read 10 distinct words + write 1 word
 *   m)  pthread_mutex lock + increment + unlock (uncontended, process single-threaded)
 *   m2) same, after an idle 2nd thread was created (glibc then uses atomic ops)
 *
 * Transactions use the same pattern as test/intset's TM_START/TM_COMMIT macros:
 * stm_start(attr) + sigsetjmp(*env, 0) ... stm_commit().
 * The loads/stores are calls into libstm.a (not inlined, no LTO), and all
 * loaded values are accumulated into a volatile sink, so nothing can be
 * optimised away.  Words are 64 bytes apart so each maps to a distinct lock
 * (LOCK_SHIFT = 3 + LOCK_SHIFT_EXTRA(2) => 32 bytes per stripe).
 *
 * Build: see README.md ("What was built").  Run: ./micro [N] [RUNS]
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "stm.h"

#define STRIDE 8                       /* words: 64 bytes between words */
#define NWORDS 11

static stm_word_t data[NWORDS * STRIDE] __attribute__((aligned(64)));
static volatile stm_word_t sink;
static pthread_mutex_t mtx = PTHREAD_MUTEX_INITIALIZER;
static volatile long mcounter;

#define W(i) (&data[(i) * STRIDE])

#define TX_BEGIN(ro) { stm_tx_attr_t _a = {{.id = 0, .read_only = (ro)}}; \
                       sigjmp_buf *_e = stm_start(_a); \
                       if (_e != NULL) sigsetjmp(*_e, 0);
#define TX_END         stm_commit(); }

static double now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void bench_ro(long n)
{
  stm_word_t acc = 0;
  for (long i = 0; i < n; i++) {
    TX_BEGIN(1);
    acc += stm_load(W(0));
    TX_END;
  }
  sink = acc;
}

static void bench_r_default(long n)
{
  stm_word_t acc = 0;
  for (long i = 0; i < n; i++) {
    TX_BEGIN(0);
    acc += stm_load(W(0));
    TX_END;
  }
  sink = acc;
}

static void bench_rw(long n)
{
  for (long i = 0; i < n; i++) {
    TX_BEGIN(0);
    stm_word_t v = stm_load(W(0));
    stm_store(W(0), v + 1);
    TX_END;
  }
}

static void bench_r10w1(long n)
{
  stm_word_t acc = 0;
  for (long i = 0; i < n; i++) {
    TX_BEGIN(0);
    stm_word_t s = 0;
    for (int k = 1; k <= 10; k++)
      s += stm_load(W(k));
    stm_store(W(0), stm_load(W(0)) * 0 + s + (stm_word_t)i);
    acc += s;
    TX_END;
  }
  sink = acc;
}

static void bench_r10w1_strict(long n)
{
  /* exactly 10 reads + 1 write (write target is not read) */
  stm_word_t acc = 0;
  for (long i = 0; i < n; i++) {
    TX_BEGIN(0);
    stm_word_t s = 0;
    for (int k = 1; k <= 10; k++)
      s += stm_load(W(k));
    stm_store(W(0), s + (stm_word_t)i);
    acc += s;
    TX_END;
  }
  sink = acc;
}

static void bench_mutex(long n)
{
  for (long i = 0; i < n; i++) {
    pthread_mutex_lock(&mtx);
    mcounter++;
    pthread_mutex_unlock(&mtx);
  }
}

static pthread_mutex_t idle_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t idle_c = PTHREAD_COND_INITIALIZER;
static int idle_stop = 0;
static void *idle_thread(void *arg)
{
  pthread_mutex_lock(&idle_m);
  while (!idle_stop)
    pthread_cond_wait(&idle_c, &idle_m);
  pthread_mutex_unlock(&idle_m);
  return NULL;
}

static int cmpd(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void run(const char *name, void (*f)(long), long n, int runs)
{
  double r[64];
  f(n / 10);                           /* warm-up */
  for (int i = 0; i < runs; i++) {
    double t0 = now_ns();
    f(n);
    r[i] = (now_ns() - t0) / n;
  }
  qsort(r, runs, sizeof(double), cmpd);
  printf("%-44s median %7.2f ns/tx   (min %6.2f, max %6.2f, runs:", name, r[runs / 2], r[0], r[runs - 1]);
  for (int i = 0; i < runs; i++) printf(" %.2f", r[i]);
  printf(")\n");
}

int main(int argc, char **argv)
{
  long n = argc > 1 ? atol(argv[1]) : 10000000L;
  int runs = argc > 2 ? atoi(argv[2]) : 5;
  char *s;
  if (runs > 64) runs = 64;

  stm_init();
  stm_init_thread();
  if (stm_get_parameter("design", &s)) printf("design: %s\n", s);
  if (stm_get_parameter("contention_manager", &s)) printf("cm: %s\n", s);
  printf("N=%ld tx per run, %d runs, single thread\n", n, runs);

  run("a)  RO tx, 1 load (read_only=1)", bench_ro, n, runs);
  run("a2) tx, 1 load (default attrs, read set)", bench_r_default, n, runs);
  run("b)  1 load + 1 store (increment)", bench_rw, n, runs);
  run("c)  10 loads + 1 store (distinct words)", bench_r10w1_strict, n, runs);
  run("c2) 11 loads + 1 store (RMW of 11th word)", bench_r10w1, n, runs);
  run("m)  pthread_mutex lock+inc+unlock", bench_mutex, n, runs);

  /* glibc (>= 2.34/2.35) skips the atomic RMW in pthread_mutex_lock/unlock
   * while the process is single-threaded (__libc_single_threaded).  Start an
   * idle second thread so the mutex takes its normal atomic (lock cmpxchg /
   * xchg) path, and measure again; STM numbers do not depend on this, but we
   * re-run b) for comparison. */
  {
    pthread_t t;
    pthread_create(&t, NULL, idle_thread, NULL);
    run("m2) pthread_mutex, idle 2nd thread exists", bench_mutex, n, runs);
    run("b') 1 load + 1 store, idle 2nd thread exists", bench_rw, n, runs);
    pthread_mutex_lock(&idle_m); idle_stop = 1; pthread_cond_signal(&idle_c); pthread_mutex_unlock(&idle_m);
    pthread_join(t, NULL);
  }

  /* sanity: counter in word 0 (b) was incremented N*runs + warmups */
  printf("check: mcounter=%ld sink=%lu\n", (long)mcounter, (unsigned long)sink);

  stm_exit_thread();
  stm_exit();
  return 0;
}
