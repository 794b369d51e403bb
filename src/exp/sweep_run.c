/* sweep_run.c — running a sweep: which jobs are done (the results database), the plan with time
 * estimates, and the jobs themselves as child processes of the qlm binary.
 *
 * Crash safety: every job's output is either a file written atomically by the child (quantized
 * model, head) or a run recorded by the child in one transaction. A job counts as done only when
 * its labelled run exists (and its file, for quantize/train), so after a SIGKILL anywhere the next
 * sweep redoes exactly the unfinished jobs. Children get SIGKILL when the sweep dies
 * (PR_SET_PDEATHSIG), so no orphan can record a cell that a resumed sweep runs again; a lock on
 * the work dir keeps two sweeps from sharing it, which makes the leftover temporary files of a
 * killed quantization safe to delete at start. */
#include "exp/sweep.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "db/db.h"
#include "formats/source.h"

extern char **environ;

/* Effective speed assumed by the rough estimate: batched prefill of a 135M model on 2 AVX-512 cores
 * feeds about 150-300 tokens/s, i.e. 2 x params x tokens/s = 40-80 GFLOP/s. */
#define ROUGH_FLOPS 5e10

enum { ST_SKIP, ST_DONE, ST_TODO, ST_RUNNING, ST_OK, ST_FAILED, ST_BLOCKED };

typedef struct jstate {
  int status;
  int record;       /* pass --db (0: a quantize/train job already recorded whose file is gone) */
  pid_t pid;
  double t0, est;   /* start time, estimated seconds */
  char est_src[8];  /* "db", "rough" */
  int exit_code;
} jstate;

typedef struct sweep {
  qlm_sweep_config *cfg;
  const qlm_sweep_opts *o;
  qlm_sweep_job *jobs;
  int n_jobs;
  jstate *st;
  qlm_db *db;        /* NULL in a dry run without a database file */
  char *work;        /* work dir */
  int threads;
  int64_t *params;   /* [n_models] parameter counts (<= 0 unknown) */
  int *n_ctx;        /* [n_models] */
} sweep;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fmt_dur(double s, char *buf, size_t n) {
  if (!(s >= 0) || !isfinite(s)) snprintf(buf, n, "?");
  else if (s < 1) snprintf(buf, n, "<1s");
  else if (s < 60) snprintf(buf, n, "%.0fs", s);
  else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
  else snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
}

static int file_exists(const char *p) {
  struct stat st;
  return p && stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* mkdir -p */
static int make_dirs(const char *path, qlm_error *err) {
  char *p = strdup(path);
  if (!p) return qlm_fail(err, QLM_ENOMEM, "%s: out of memory", path);
  for (char *s = p + 1;; s++) {
    if (*s && *s != '/') continue;
    char c = *s;
    *s = 0;
    if (mkdir(p, 0777) != 0 && errno != EEXIST) {
      int e = errno;
      qlm_fail(err, QLM_EIO, "%s: cannot create the directory: %s", p, strerror(e));
      free(p);
      return QLM_EIO;
    }
    if (!(*s = c)) break;
  }
  free(p);
  return QLM_OK;
}

/* The database path made absolute (children may be started elsewhere; messages name it fully). */
static int absolute_db(qlm_sweep_config *cfg, qlm_error *err) {
  if (cfg->db[0] == '/') return QLM_OK;
  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd)) return qlm_fail(err, QLM_EIO, "%s: cannot resolve the current directory", cfg->db);
  char *p = NULL;
  if (asprintf(&p, "%s/%s", cwd, cfg->db) < 0) return qlm_fail(err, QLM_ENOMEM, "%s: out of memory", cfg->db);
  free(cfg->db);
  cfg->db = p;
  return QLM_OK;
}

/* ---- the database: done jobs and past durations ---- */

static int label_recorded(sweep *s, const char *label) {
  if (!s->db) return 0;
  sqlite3_stmt *q = NULL;
  int found = 0;
  if (sqlite3_prepare_v2(qlm_db_sqlite(s->db), "SELECT 1 FROM runs WHERE label = ?1 LIMIT 1", -1, &q, NULL) == SQLITE_OK) {
    sqlite3_bind_text(q, 1, label, -1, SQLITE_TRANSIENT);
    found = sqlite3_step(q) == SQLITE_ROW;
  }
  sqlite3_finalize(q);
  return found;
}

/* Mean wall time (sum of the phases) of the runs a query selects; NaN when none. */
static double mean_duration(sweep *s, const char *where, const char *a, const char *b) {
  if (!s->db) return NAN;
  char sql[512];
  snprintf(sql, sizeof sql,
           "SELECT AVG(t) FROM (SELECT SUM(p.wall_s) AS t FROM runs r JOIN phases p ON p.run_id = r.id "
           "LEFT JOIN models m ON m.id = r.model_id WHERE %s GROUP BY r.id)", where);
  sqlite3_stmt *q = NULL;
  double v = NAN;
  if (sqlite3_prepare_v2(qlm_db_sqlite(s->db), sql, -1, &q, NULL) == SQLITE_OK) {
    if (a) sqlite3_bind_text(q, 1, a, -1, SQLITE_TRANSIENT);
    if (b) sqlite3_bind_text(q, 2, b, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(q) == SQLITE_ROW && sqlite3_column_type(q, 0) != SQLITE_NULL) v = sqlite3_column_double(q, 0);
  }
  sqlite3_finalize(q);
  return v;
}

/* A labelled guess from the model size and the task's amount of work. */
static double rough_seconds(sweep *s, const qlm_sweep_job *j) {
  const qlm_sweep_config *cfg = s->cfg;
  double P = s->params[j->model] > 0 ? (double)s->params[j->model] : 1e8, ctx = s->n_ctx[j->model] > 0 ? s->n_ctx[j->model] : 2048;
  double fwd = 2 * P / ROUGH_FLOPS; /* seconds per token */
  if (j->kind == QLM_JOB_QUANTIZE) {
    const qlm_sweep_quant *q = &cfg->quants[j->quant];
    double per_param = !strcmp(q->method, "hqq") ? 300e-9 : !strcmp(q->method, "gptq") ? 150e-9
                       : !strcmp(q->method, "awq") ? 200e-9 : 20e-9;
    double t = 1 + P * per_param;
    if (q->calibrated) t += (double)q->calib_samples * fmin((double)q->calib_len, ctx) * fwd * 1.5;
    return t;
  }
  if (j->kind == QLM_JOB_TRAIN) return 2 + (double)(cfg->trains[j->train].limit ? cfg->trains[j->train].limit : 2000) * 40 * fwd;
  const qlm_sweep_task *t = &cfg->tasks[j->task];
  switch (t->kind) {
  case QLM_TASK_PPL: {
    double w = t->window ? (double)t->window : fmin(1024, ctx);
    double tokens = t->chunks ? (double)t->chunks * w : 2 * 1.3e6 / 4.3; /* WikiText-2 test, windows overlap by half */
    return 1 + tokens * fwd;
  }
  case QLM_TASK_CLASSIFY: return 1 + (double)(t->limit ? t->limit : 12284) * 40 * fwd;
  case QLM_TASK_MMLU: return 2 + (double)(t->limit ? t->limit * 57 : 14042) * 120 * (double)(t->shots + 1) * fwd;
  default: return 2 + t->duration_s;
  }
}

/* Estimate from earlier runs of the same command and model (tiers, best first), else rough. */
static void estimate(sweep *s, int i) {
  const qlm_sweep_job *j = &s->jobs[i];
  jstate *st = &s->st[i];
  const qlm_sweep_config *cfg = s->cfg;
  char pat[sizeof j->label + 8];
  double v = NAN;
  char *model = j->kind == QLM_JOB_CELL ? qlm_sweep_quant_path(cfg, j->model, j->quant) : strdup(cfg->models[j->model].path);
  const char *command = j->kind == QLM_JOB_QUANTIZE ? "quantize" : j->kind == QLM_JOB_TRAIN ? "classify" : cfg->tasks[j->task].command;
  if (j->kind == QLM_JOB_CELL) { /* the same task on this model under another quantization */
    snprintf(pat, sizeof pat, "%s/*/%s", cfg->models[j->model].name, cfg->tasks[j->task].key);
    v = mean_duration(s, "r.label GLOB ?1", pat, NULL);
  } else
    v = mean_duration(s, "r.label = ?1", j->label, NULL);
  if (isnan(v) && model) v = mean_duration(s, "r.command = ?1 AND m.path = ?2", command, model);
  free(model);
  if (!isnan(v)) {
    st->est = v;
    snprintf(st->est_src, sizeof st->est_src, "db");
  } else {
    st->est = rough_seconds(s, j);
    snprintf(st->est_src, sizeof st->est_src, "rough");
  }
}

/* ---- the plan ---- */

static char *job_output(const sweep *s, const qlm_sweep_job *j) {
  if (j->kind == QLM_JOB_QUANTIZE) return qlm_sweep_quant_path(s->cfg, j->model, j->quant);
  if (j->kind == QLM_JOB_TRAIN) return qlm_sweep_head_path(s->cfg, j->model, j->train);
  return NULL;
}

/* Which jobs run: selected cells not yet recorded, and the quantize/train jobs they need whose
 * file is not there or whose run is not recorded (a deleted quantized file whose cells are all
 * done is not made again). */
static void decide(sweep *s) {
  const char *only = s->o->only;
  for (int i = 0; i < s->n_jobs; i++) {
    qlm_sweep_job *j = &s->jobs[i];
    jstate *st = &s->st[i];
    int selected = !only || fnmatch(only, j->label, 0) == 0;
    int recorded = label_recorded(s, j->label);
    st->record = 1;
    if (j->kind != QLM_JOB_CELL) {
      char *out = job_output(s, j);
      int have = file_exists(out);
      free(out);
      /* wanted by itself only when --only names it; otherwise when a cell to run needs it (below) */
      st->status = recorded && have ? ST_DONE : only && selected ? ST_TODO : ST_SKIP;
      st->record = !recorded;
      continue;
    }
    st->status = recorded ? ST_DONE : selected ? ST_TODO : ST_SKIP;
    if (st->status != ST_TODO) continue;
    int deps[2] = {j->dep_quant, j->dep_train};
    for (int k = 0; k < 2; k++)
      if (deps[k] >= 0 && s->st[deps[k]].status == ST_SKIP) s->st[deps[k]].status = ST_TODO;
  }
}

static int load_params(sweep *s, qlm_error *err) {
  for (int m = 0; m < s->cfg->n_models; m++) {
    int needed = 0;
    for (int i = 0; i < s->n_jobs && !needed; i++) needed = s->jobs[i].model == m && s->st[i].status == ST_TODO;
    if (!needed) continue;
    qlm_source *src = NULL;
    if (qlm_source_open(s->cfg->models[m].path, NULL, &src, err))
      return qlm_fail_prefix(err, "%s: models: %s", s->cfg->file, s->cfg->models[m].name);
    s->params[m] = qlm_source_n_params(src);
    s->n_ctx[m] = src->hp.n_ctx;
    qlm_source_close(src);
  }
  return QLM_OK;
}

static void print_plan(sweep *s) {
  FILE *f = s->o->out;
  int n_todo = 0, n_done = 0, n_rough = 0;
  double total = 0;
  char d[32];
  fprintf(f, "sweep %s: %d models x %d quant configs x %d task cells x %d repetitions; database %s\n", s->cfg->name,
          s->cfg->n_models, s->cfg->n_quants, s->cfg->n_tasks, s->cfg->repetitions, s->cfg->db);
  fprintf(f, "%5s  %-6s %9s  %s\n", "#", "status", "estimate", "job (runs.label)");
  int k = 0;
  for (int i = 0; i < s->n_jobs; i++) {
    jstate *st = &s->st[i];
    if (st->status == ST_SKIP) continue;
    k++;
    if (st->status == ST_DONE) {
      n_done++;
      fprintf(f, "%5d  %-6s %9s  %s\n", k, "done", "-", s->jobs[i].label);
      continue;
    }
    estimate(s, i);
    n_todo++;
    total += st->est;
    n_rough += !strcmp(st->est_src, "rough");
    fmt_dur(st->est, d, sizeof d);
    fprintf(f, "%5d  %-6s %9s%s %s%s\n", k, "todo", d, strcmp(st->est_src, "rough") ? " " : "~", s->jobs[i].label,
            st->record ? "" : "  (file missing: redone, not recorded again)");
  }
  fmt_dur(total, d, sizeof d);
  fprintf(f, "%d jobs: %d done, %d to run; estimated %s of work", n_done + n_todo, n_done, n_todo, d);
  if (s->o->jobs > 1 && n_todo > 1) {
    char d2[32];
    fmt_dur(total / (s->o->jobs < n_todo ? s->o->jobs : n_todo), d2, sizeof d2);
    fprintf(f, " (about %s with --jobs %d)", d2, s->o->jobs);
  }
  if (n_rough)
    fprintf(f, "\n  ~ %d of them a rough estimate from the model size (%.0e FLOP/s assumed): no earlier runs of that "
            "command and model in the database", n_rough, ROUGH_FLOPS);
  fprintf(f, "\n");
  fflush(f);
}

/* ---- the work dir ---- */

/* Temporary files of a quantization or head that was killed midway (".NAME.tmp-XXXXXX", see
 * core/atomic_file.h): nobody else writes here while we hold the lock. */
static void clean_temporaries(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] != '.' || !strstr(e->d_name, ".tmp-")) continue;
    char p[PATH_MAX];
    if ((size_t)snprintf(p, sizeof p, "%s/%s", dir, e->d_name) < sizeof p) unlink(p);
  }
  closedir(d);
}

static int prepare_work(sweep *s, int *lock_fd, qlm_error *err) {
  char p[PATH_MAX];
  if (make_dirs(s->work, err)) return err->code;
  snprintf(p, sizeof p, "%s/.sweep.lock", s->work);
  int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return qlm_fail(err, QLM_EIO, "%s: cannot create the lock file: %s", p, strerror(errno));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    close(fd);
    return qlm_fail(err, QLM_EIO, "%s: another qlm sweep is running on this work dir (lock %s held)", s->work, p);
  }
  *lock_fd = fd;
  if ((size_t)snprintf(p, sizeof p, "%s/logs", s->work) >= sizeof p || make_dirs(p, err))
    return err->code ? err->code : qlm_fail(err, QLM_ELIMIT, "%s: path too long", s->work);
  for (int m = 0; m < s->cfg->n_models; m++) {
    if ((size_t)snprintf(p, sizeof p, "%s/%s", s->work, s->cfg->models[m].name) >= sizeof p)
      return qlm_fail(err, QLM_ELIMIT, "%s: path too long", s->work);
    if (make_dirs(p, err)) return err->code;
    clean_temporaries(p);
  }
  return QLM_OK;
}

static char *log_path(const sweep *s, const qlm_sweep_job *j) {
  char name[sizeof j->label];
  snprintf(name, sizeof name, "%s", j->label);
  for (char *c = name; *c; c++)
    if (*c == '/' || *c == ':' || *c == '#') *c = '_';
  char *p = NULL;
  return asprintf(&p, "%s/logs/%s.log", s->work, name) < 0 ? NULL : p;
}

/* ---- children ---- */

/* environ without QLM_RUN_LABEL / QLM_DEQUANT_ALL, plus this job's. NULL-terminated, malloc'd. */
static char **child_env(const char *label, int dequant_all) {
  size_t n = 0;
  while (environ[n]) n++;
  char **env = calloc(n + 3, sizeof *env);
  if (!env) return NULL;
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (strncmp(environ[i], "QLM_RUN_LABEL=", 14) && strncmp(environ[i], "QLM_DEQUANT_ALL=", 16)) env[k++] = environ[i];
  char *lab = NULL;
  if (asprintf(&lab, "QLM_RUN_LABEL=%s", label) < 0) {
    free(env);
    return NULL;
  }
  env[k++] = lab;
  if (dequant_all) env[k++] = "QLM_DEQUANT_ALL=1";
  return env;
}

static int spawn(sweep *s, int i, qlm_error *err) {
  const qlm_sweep_job *j = &s->jobs[i];
  jstate *st = &s->st[i];
  char **argv = qlm_sweep_job_argv(s->cfg, j, s->o->exe, s->threads, st->record, err);
  if (!argv) return err->code;
  /* fp32 cells and the head (trained on the base model) run the weights dequantized to f32 */
  int fp32 = j->kind == QLM_JOB_TRAIN || (j->kind == QLM_JOB_CELL && s->cfg->quants[j->quant].kind == QLM_SWEEP_FP32);
  char **env = child_env(j->label, fp32);
  char *log = log_path(s, j);
  int fd = log ? open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;
  int rc = QLM_OK;
  if (!env || !log) rc = qlm_fail(err, QLM_ENOMEM, "sweep: out of memory starting %s", j->label);
  else if (fd < 0) rc = qlm_fail(err, QLM_EIO, "%s: cannot create the job's log: %s", log, strerror(errno));
  if (!rc) {
    /* the command line goes first in the log, so a failed cell can be rerun by hand */
    for (char **a = argv; *a; a++) dprintf(fd, "%s%s", a == argv ? "# " : " ", *a);
    dprintf(fd, "\n# QLM_RUN_LABEL=%s%s\n", j->label, fp32 ? " QLM_DEQUANT_ALL=1" : "");
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) { /* child: only async-signal-safe calls until exec */
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      int nul = open("/dev/null", O_RDONLY);
      if (nul >= 0) dup2(nul, 0);
      dup2(fd, 1);
      dup2(fd, 2);
      execve(argv[0], argv, env);
      _exit(127);
    }
    if (pid < 0) rc = qlm_fail(err, QLM_EIO, "sweep: cannot start %s: %s", j->label, strerror(errno));
    st->pid = pid;
    st->t0 = now_s();
    st->status = ST_RUNNING;
  }
  if (fd >= 0) close(fd);
  if (env) {
    for (char **e = env; *e; e++)
      if (!strncmp(*e, "QLM_RUN_LABEL=", 14)) free(*e);
    free(env);
  }
  free(log);
  qlm_sweep_argv_free(argv);
  return rc;
}

/* The last non-empty line of a log (what the child said when it failed). */
static void last_line(const char *path, char *buf, size_t n) {
  buf[0] = 0;
  FILE *f = fopen(path, "r");
  if (!f) return;
  char line[1024];
  while (fgets(line, sizeof line, f)) {
    size_t l = strlen(line);
    while (l && (line[l - 1] == '\n' || line[l - 1] == '\r')) line[--l] = 0;
    if (l) snprintf(buf, n, "%s", line);
  }
  fclose(f);
}

/* A child ended: check what it left (its run, its file). */
static void finished(sweep *s, int i, int wstatus, int *n_finished, int n_total, double *left) {
  const qlm_sweep_job *j = &s->jobs[i];
  jstate *st = &s->st[i];
  double dt = now_s() - st->t0;
  char why[1200] = "", d[32];
  int ok = WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0;
  if (!ok) {
    st->exit_code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
    if (WIFSIGNALED(wstatus)) snprintf(why, sizeof why, "killed by signal %d", WTERMSIG(wstatus));
    else snprintf(why, sizeof why, "exit %d", st->exit_code);
  } else if (st->record && !label_recorded(s, j->label)) {
    ok = 0, st->exit_code = QLM_EINTERNAL;
    snprintf(why, sizeof why, "exited 0 but recorded no run labelled %s in %s", j->label, s->cfg->db);
  } else if (j->kind != QLM_JOB_CELL) {
    char *out = job_output(s, j);
    if (!file_exists(out)) {
      ok = 0, st->exit_code = QLM_EINTERNAL;
      snprintf(why, sizeof why, "exited 0 but did not write %s", out ? out : "its file");
    }
    free(out);
  }
  st->status = ok ? ST_OK : ST_FAILED;
  *left -= st->est;
  if (*left < 0) *left = 0;
  fmt_dur(dt, d, sizeof d);
  ++*n_finished;
  FILE *f = s->o->out;
  if (ok) {
    char l[32];
    fmt_dur(*left, l, sizeof l);
    fprintf(f, "[%d/%d] ok     %7s  %s  (left ~%s)\n", *n_finished, n_total, d, j->label, l);
  } else {
    char *log = log_path(s, j), tail[1024];
    last_line(log, tail, sizeof tail);
    fprintf(f, "[%d/%d] FAILED %7s  %s: %s; log %s%s%s\n", *n_finished, n_total, d, j->label, why, log ? log : "?",
            tail[0] ? "\n        last line: " : "", tail);
    free(log);
  }
  fflush(f);
}

static int deps_state(const sweep *s, const qlm_sweep_job *j) {
  int deps[2] = {j->dep_quant, j->dep_train}, ready = 1;
  for (int k = 0; k < 2; k++) {
    if (deps[k] < 0) continue;
    int d = s->st[deps[k]].status;
    if (d == ST_FAILED || d == ST_BLOCKED) return -1;
    if (d != ST_DONE && d != ST_OK) ready = 0;
  }
  return ready;
}

static int run_jobs(sweep *s, qlm_error *err) {
  int n_total = 0, running = 0, n_finished = 0;
  double left = 0;
  for (int i = 0; i < s->n_jobs; i++)
    if (s->st[i].status == ST_TODO) n_total++, left += s->st[i].est;
  double t_start = now_s();
  for (;;) {
    for (int i = 0; i < s->n_jobs && running < s->o->jobs; i++) {
      if (s->st[i].status != ST_TODO) continue;
      int r = deps_state(s, &s->jobs[i]);
      if (r < 0) {
        s->st[i].status = ST_BLOCKED;
        n_finished++;
        fprintf(s->o->out, "[%d/%d] blocked          %s: the job it needs failed\n", n_finished, n_total, s->jobs[i].label);
        continue;
      }
      if (r == 0) continue;
      if (spawn(s, i, err)) {
        s->st[i].status = ST_FAILED, s->st[i].exit_code = err->code;
        n_finished++;
        fprintf(s->o->out, "[%d/%d] FAILED           %s: %s\n", n_finished, n_total, s->jobs[i].label, err->msg);
        continue;
      }
      running++;
    }
    if (!running) break;
    int ws;
    pid_t pid = waitpid(-1, &ws, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      return qlm_fail(err, QLM_EINTERNAL, "sweep: waitpid: %s", strerror(errno));
    }
    for (int i = 0; i < s->n_jobs; i++)
      if (s->st[i].status == ST_RUNNING && s->st[i].pid == pid) {
        running--;
        finished(s, i, ws, &n_finished, n_total, &left);
        break;
      }
  }
  int n_ok = 0, n_failed = 0, n_blocked = 0, first = -1;
  for (int i = 0; i < s->n_jobs; i++) {
    n_ok += s->st[i].status == ST_OK;
    n_blocked += s->st[i].status == ST_BLOCKED;
    if (s->st[i].status == ST_FAILED && n_failed++ == 0) first = i;
  }
  char d[32];
  fmt_dur(now_s() - t_start, d, sizeof d);
  fprintf(s->o->out, "sweep %s: %d ran ok, %d failed, %d blocked by a failed job, in %s; results in %s\n", s->cfg->name,
          n_ok, n_failed, n_blocked, d, s->cfg->db);
  fflush(s->o->out);
  if (n_failed) {
    int code = s->st[first].exit_code;
    char *log = log_path(s, &s->jobs[first]);
    qlm_fail(err, code >= QLM_EUSAGE && code <= QLM_EINTERNAL ? code : QLM_EINTERNAL,
             "sweep: %d job%s failed (first: %s, see %s); run the sweep again to retry them", n_failed,
             n_failed > 1 ? "s" : "", s->jobs[first].label, log ? log : "its log");
    free(log);
    return err->code;
  }
  return QLM_OK;
}

int qlm_sweep_run(qlm_sweep_config *cfg, const qlm_sweep_opts *o, qlm_error *err) {
  sweep s = {.cfg = cfg, .o = o};
  int lock_fd = -1, rc;
  if (o->jobs < 1 || !o->exe) return qlm_fail(err, QLM_EINTERNAL, "sweep: bad options (jobs %d)", o->jobs);
  if ((rc = absolute_db(cfg, err)) || (rc = qlm_sweep_expand(cfg, &s.jobs, &s.n_jobs, err))) return rc;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  s.threads = o->threads > 0 ? o->threads : cfg->threads > 0 ? cfg->threads : (int)(cpus > o->jobs ? cpus / o->jobs : 1);
  s.work = qlm_sweep_work_dir(cfg);
  s.st = calloc((size_t)s.n_jobs + 1, sizeof *s.st);
  s.params = calloc((size_t)cfg->n_models, sizeof *s.params);
  s.n_ctx = calloc((size_t)cfg->n_models, sizeof *s.n_ctx);
  if (!s.work || !s.st || !s.params || !s.n_ctx) {
    rc = qlm_fail(err, QLM_ENOMEM, "%s: out of memory (%d jobs)", cfg->file, s.n_jobs);
    goto done;
  }
  /* a dry run creates nothing: without the database file every job is still to do */
  if ((!o->dry_run || file_exists(cfg->db)) && (rc = qlm_db_open(cfg->db, &s.db, err))) goto done;
  decide(&s);
  if ((rc = load_params(&s, err))) goto done;
  print_plan(&s);
  if (o->dry_run) goto done;
  if ((rc = prepare_work(&s, &lock_fd, err))) goto done;
  /* the plan's view may be stale once we hold the lock (a sweep that just ended): decide again */
  decide(&s);
  for (int i = 0; i < s.n_jobs; i++)
    if (s.st[i].status == ST_TODO && !s.st[i].est_src[0]) estimate(&s, i);
  rc = run_jobs(&s, err);
done:
  if (lock_fd >= 0) close(lock_fd);
  qlm_db_close(s.db);
  free(s.jobs), free(s.st), free(s.work), free(s.params), free(s.n_ctx);
  return rc;
}
