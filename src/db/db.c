/* db.c — open/migrate the results database and record runs (see db.h for the schema). */
#include "db/db.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "db/sha256.h"
#include "kernels/cpu.h"

#ifndef QLM_GIT_COMMIT
#define QLM_GIT_COMMIT "unknown"
#endif

struct qlm_db {
  sqlite3 *h;
  char *path;
  void (*row_hook)(void *ctx, int row);
  void *row_ctx;
  int rows; /* rows inserted by the current record_run (for the hook) */
};

/* ---- migrations: migrations[v] takes the schema from version v to v + 1 ---- */

static const char migrate_v1[] =
    "CREATE TABLE models(id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, path TEXT NOT NULL, sha256 TEXT,"
    "  params INTEGER, arch TEXT);"
    "CREATE TABLE runs(id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, command TEXT NOT NULL,"
    "  started TEXT NOT NULL, finished TEXT NOT NULL, qlm_version TEXT, git_commit TEXT, cpu_model TEXT,"
    "  cores INTEGER, ram_bytes INTEGER, simd TEXT, hostname TEXT, command_line TEXT,"
    "  model_id INTEGER REFERENCES models(id), quant_id INTEGER);"
    "CREATE TABLE quant_configs(id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id),"
    "  method TEXT NOT NULL, bits REAL, group_size INTEGER, options TEXT, rules TEXT, seed INTEGER,"
    "  config_key TEXT NOT NULL);"
    "CREATE TABLE results(id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id), idx INTEGER NOT NULL,"
    "  task TEXT NOT NULL, protocol TEXT, data TEXT, model_path TEXT, method TEXT, bits REAL, tokens INTEGER,"
    "  seconds REAL, UNIQUE(run_id, idx));"
    "CREATE TABLE metrics(id INTEGER PRIMARY KEY, result_id INTEGER NOT NULL REFERENCES results(id),"
    "  name TEXT NOT NULL, value REAL, stderr REAL, UNIQUE(result_id, name));"
    "CREATE TABLE artefacts(id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id), path TEXT NOT NULL,"
    "  kind TEXT NOT NULL, sha256 TEXT, bytes INTEGER);";

static const char migrate_v2[] =
    "ALTER TABLE runs ADD COLUMN label TEXT;"
    "CREATE TABLE phases(id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id), name TEXT NOT NULL,"
    "  count INTEGER, wall_s REAL, user_s REAL, sys_s REAL, rss_start INTEGER, peak_rss INTEGER, peak_method TEXT,"
    "  weight_bytes INTEGER, kv_bytes INTEGER, tokens INTEGER, cpu_kwh REAL, ram_kwh REAL, gpu_kwh REAL,"
    "  gpu_mem_peak INTEGER, cpu_energy TEXT, ram_energy TEXT, gpu_energy TEXT, cpu_method TEXT, ram_method TEXT,"
    "  gpu_method TEXT, co2_g REAL, country TEXT, g_per_kwh REAL, pue REAL);"
    "CREATE TABLE result_settings(result_id INTEGER NOT NULL REFERENCES results(id), key TEXT NOT NULL,"
    "  value TEXT, PRIMARY KEY(result_id, key));"
    "CREATE INDEX runs_model ON runs(model_id);"
    "CREATE INDEX runs_label ON runs(label);"
    "CREATE INDEX quant_run ON quant_configs(run_id);"
    "CREATE INDEX quant_key ON quant_configs(config_key);"
    "CREATE INDEX results_run ON results(run_id);"
    "CREATE INDEX phases_run ON phases(run_id);"
    "CREATE INDEX artefacts_run ON artefacts(run_id);"
    "CREATE VIEW metrics_flat AS SELECT r.run_id, r.id AS result_id, r.idx, r.task, r.protocol, m.name, m.value,"
    "  m.stderr, r.tokens FROM metrics m JOIN results r ON r.id = m.result_id;";

static const char *const migrations[QLM_DB_SCHEMA_VERSION] = {migrate_v1, migrate_v2};

static int db_fail(qlm_db *db, qlm_error *err, int code, const char *what) {
  int ec = sqlite3_extended_errcode(db->h);
  if ((ec & 0xff) == SQLITE_NOTADB)
    return qlm_fail(err, QLM_EFORMAT, "%s: not a SQLite database (%s)", db->path, sqlite3_errmsg(db->h));
  if ((ec & 0xff) == SQLITE_CORRUPT)
    return qlm_fail(err, QLM_EFORMAT, "%s: database is corrupt (%s): %s", db->path, what, sqlite3_errmsg(db->h));
  return qlm_fail(err, code, "%s: %s: %s", db->path, what, sqlite3_errmsg(db->h));
}

static int exec(qlm_db *db, const char *sql, const char *what, qlm_error *err) {
  if (sqlite3_exec(db->h, sql, NULL, NULL, NULL) != SQLITE_OK) return db_fail(db, err, QLM_EIO, what);
  return QLM_OK;
}

/* Switching a fresh file to WAL upgrades a shared lock to an exclusive one. When two openers
 * race, SQLite answers SQLITE_BUSY at once instead of calling the busy handler (waiting could
 * deadlock), so the switch is retried here, 10 ms apart, within the same busy timeout. */
static int exec_retry_busy(qlm_db *db, const char *sql, const char *what, qlm_error *err) {
  for (int waited_ms = 0;; waited_ms += 10) {
    int rc = sqlite3_exec(db->h, sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK) return QLM_OK;
    if ((rc & 0xff) != SQLITE_BUSY || waited_ms >= QLM_DB_BUSY_TIMEOUT_MS) return db_fail(db, err, QLM_EIO, what);
    struct timespec ten_ms = {0, 10 * 1000 * 1000};
    nanosleep(&ten_ms, NULL);
  }
}

static int user_version(qlm_db *db, int *v, qlm_error *err) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db->h, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
    return db_fail(db, err, QLM_EIO, "reading the schema version");
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) *v = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return rc == SQLITE_ROW ? QLM_OK : db_fail(db, err, QLM_EIO, "reading the schema version");
}

/* Apply the missing migrations, one IMMEDIATE transaction each; the version is re-read inside
 * the transaction so a concurrent opener that migrated first is not migrated over. */
static int migrate(qlm_db *db, qlm_error *err) {
  for (;;) {
    int v = 0;
    if (user_version(db, &v, err)) return err->code;
    if (v > QLM_DB_SCHEMA_VERSION)
      return qlm_fail(err, QLM_EUNSUPPORTED, "%s: schema version %d is newer than this qlm's (%d): use a newer qlm",
                      db->path, v, QLM_DB_SCHEMA_VERSION);
    if (v == QLM_DB_SCHEMA_VERSION) return QLM_OK;
    if (exec(db, "BEGIN IMMEDIATE", "starting a migration", err)) return err->code;
    int rc = user_version(db, &v, err);
    if (!rc && v < QLM_DB_SCHEMA_VERSION) {
      char pragma[48];
      snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", v + 1);
      char what[64];
      snprintf(what, sizeof what, "migrating the schema to version %d", v + 1);
      rc = exec(db, migrations[v], what, err) || exec(db, pragma, what, err);
    }
    if (rc) {
      sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
      return rc;
    }
    if (exec(db, "COMMIT", "committing a migration", err)) return err->code;
  }
}

int qlm_db_open(const char *path, qlm_db **out, qlm_error *err) {
  *out = NULL;
  if (!path || !*path) path = QLM_DB_DEFAULT_PATH;
  qlm_db *db = qlm_calloc(1, sizeof *db, "results database", err);
  if (!db) return err->code;
  db->path = strdup(path);
  if (!db->path) {
    free(db);
    return qlm_fail(err, QLM_ENOMEM, "%s: out of memory", path);
  }
  int rc = sqlite3_open_v2(path, &db->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
  if (rc != SQLITE_OK) {
    qlm_fail(err, QLM_EIO, "%s: cannot open the results database: %s", path,
             db->h ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc));
    qlm_db_close(db);
    return err->code;
  }
  sqlite3_extended_result_codes(db->h, 1);
  sqlite3_busy_timeout(db->h, QLM_DB_BUSY_TIMEOUT_MS);
  /* The first statement reads the header: a non-SQLite file fails here with SQLITE_NOTADB. WAL
   * lets readers run beside the one writer; synchronous=NORMAL is durable to a process kill
   * (only a power loss may drop the last commits, never corrupt). */
  rc = exec_retry_busy(db, "PRAGMA journal_mode=WAL", "setting WAL mode", err) ||
       exec(db, "PRAGMA synchronous=NORMAL", "setting synchronous mode", err) ||
       exec(db, "PRAGMA foreign_keys=ON", "enabling foreign keys", err) || migrate(db, err);
  if (rc) {
    qlm_db_close(db);
    return err->code;
  }
  *out = db;
  return QLM_OK;
}

void qlm_db_close(qlm_db *db) {
  if (!db) return;
  sqlite3_close_v2(db->h);
  free(db->path);
  free(db);
}

int qlm_db_schema_version(qlm_db *db) {
  int v = -1;
  qlm_error e = {0};
  return user_version(db, &v, &e) ? -1 : v;
}

sqlite3 *qlm_db_sqlite(qlm_db *db) { return db->h; }
const char *qlm_db_path(const qlm_db *db) { return db->path; }

void qlm_db_set_row_hook(qlm_db *db, void (*fn)(void *ctx, int row), void *ctx) {
  db->row_hook = fn;
  db->row_ctx = ctx;
}

/* ---- machine description ---- */

static void read_key(const char *file, const char *key, char *out, size_t n) {
  FILE *f = fopen(file, "r");
  if (!f) return;
  char line[512];
  size_t kl = strlen(key);
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, kl) != 0) continue;
    char *p = strchr(line, ':');
    if (!p) continue;
    for (p++; *p == ' ' || *p == '\t'; p++) {}
    p[strcspn(p, "\n")] = 0;
    snprintf(out, n, "%s", p);
    break;
  }
  fclose(f);
}

void qlm_db_machine_detect(qlm_db_machine *m) {
  memset(m, 0, sizeof *m);
  read_key("/proc/cpuinfo", "model name", m->cpu_model, sizeof m->cpu_model);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  m->cores = n > 0 ? (int)n : 0;
  char mem[64] = "";
  read_key("/proc/meminfo", "MemTotal", mem, sizeof mem);
  m->ram_bytes = (uint64_t)strtoull(mem, NULL, 10) * 1024u; /* "16318364 kB" */
  snprintf(m->simd, sizeof m->simd, "%s", qlm_simd_name(qlm_cpu_simd_level()));
  if (gethostname(m->hostname, sizeof m->hostname - 1)) m->hostname[0] = 0;
}

/* ---- recording ---- */

static void iso_now(char *buf, size_t n) {
  time_t t = time(NULL);
  struct tm tm;
  localtime_r(&t, &tm);
  strftime(buf, n, "%Y-%m-%dT%H:%M:%S%z", &tm);
}

static void random_uuid(char out[40]) {
  unsigned char b[16] = {0};
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  ssize_t got = fd >= 0 ? read(fd, b, sizeof b) : -1;
  if (fd >= 0) close(fd);
  if (got != (ssize_t)sizeof b) { /* no urandom: time and pid still make collisions unlikely */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t x = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 40;
    for (int i = 0; i < 16; i++) x = x * 6364136223846793005u + 1442695040888963407u, b[i] = (unsigned char)(x >> 56);
  }
  b[6] = (b[6] & 0x0f) | 0x40, b[8] = (b[8] & 0x3f) | 0x80; /* version 4, RFC 4122 variant */
  snprintf(out, 40, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4],
           b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

/* A prepared statement with positional parameters bound from a format string:
 *   's' text (NULL -> NULL), 'i' int64, 'd' double (NaN -> NULL), 'n' NULL. */
static int run_sql(qlm_db *db, const char *sql, int64_t *last_id, qlm_error *err, const char *types, ...) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK) return db_fail(db, err, QLM_EINTERNAL, "preparing");
  va_list ap;
  va_start(ap, types);
  for (int i = 0; types[i]; i++) {
    int k = i + 1;
    switch (types[i]) {
    case 's': {
      const char *s = va_arg(ap, const char *);
      s ? sqlite3_bind_text(st, k, s, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, k);
      break;
    }
    case 'i': sqlite3_bind_int64(st, k, va_arg(ap, int64_t)); break;
    case 'd': {
      double d = va_arg(ap, double);
      isfinite(d) ? sqlite3_bind_double(st, k, d) : sqlite3_bind_null(st, k);
      break;
    }
    default: va_arg(ap, void *); sqlite3_bind_null(st, k); break;
    }
  }
  va_end(ap);
  int rc = sqlite3_step(st);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) return db_fail(db, err, QLM_EIO, "writing a run");
  if (last_id) *last_id = sqlite3_last_insert_rowid(db->h);
  if (db->row_hook) db->row_hook(db->row_ctx, ++db->rows);
  return QLM_OK;
}

static int64_t query_id(qlm_db *db, const char *sql, const char *arg) {
  sqlite3_stmt *st;
  int64_t id = -1;
  if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK) return -1;
  sqlite3_bind_text(st, 1, arg, -1, SQLITE_TRANSIENT);
  if (sqlite3_step(st) == SQLITE_ROW) id = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return id;
}

static int put_model(qlm_db *db, const qlm_db_model *m, int64_t *id, qlm_error *err) {
  char key[600];
  if (m->sha256 && *m->sha256) snprintf(key, sizeof key, "sha256:%s", m->sha256);
  else snprintf(key, sizeof key, "path:%s", m->path ? m->path : "");
  if (run_sql(db, "INSERT OR IGNORE INTO models(key, path, sha256, params, arch) VALUES(?,?,?,?,?)", NULL, err, "sssds",
              key, m->path ? m->path : "", m->sha256, m->params > 0 ? (double)m->params : NAN, m->arch))
    return err->code;
  *id = query_id(db, "SELECT id FROM models WHERE key = ?", key);
  return *id < 0 ? db_fail(db, err, QLM_EIO, "looking up the model row") : QLM_OK;
}

static char *config_key(const qlm_db_quant *q) {
  char *s = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&s, &n);
  if (!f) return NULL;
  fprintf(f, "method=%s;bits=%.17g;group=%ld;seed=%lld;options=%s;rules=%s", q->method ? q->method : "",
          isfinite(q->bits) ? q->bits : 0.0, q->group, (long long)(q->seed < 0 ? -1 : q->seed),
          q->options ? q->options : "", q->rules ? q->rules : "");
  fclose(f);
  return s;
}

static int put_quant(qlm_db *db, int64_t run_id, const qlm_db_quant *q, qlm_error *err) {
  char *key = config_key(q);
  if (!key) return qlm_fail(err, QLM_ENOMEM, "%s: out of memory (quantization config)", db->path);
  int64_t qid;
  int rc = run_sql(db,
                   "INSERT INTO quant_configs(run_id, method, bits, group_size, options, rules, seed, config_key)"
                   " VALUES(?,?,?,?,?,?,?,?)",
                   &qid, err, "isdissds", run_id, q->method ? q->method : "", q->bits > 0 ? q->bits : NAN,
                   (int64_t)q->group, q->options, q->rules, q->seed >= 0 ? (double)q->seed : NAN, key);
  free(key);
  return rc ? rc : run_sql(db, "UPDATE runs SET quant_id = ? WHERE id = ?", NULL, err, "ii", qid, run_id);
}

/* "X_err" is stored as the stderr of "X" when the record has X. */
static int is_stderr_of_other(const qlm_result *r, int i) {
  const char *n = r->metrics[i].name;
  size_t len = strlen(n);
  if (len <= 4 || strcmp(n + len - 4, "_err") != 0) return 0;
  for (int j = 0; j < r->n_metrics; j++)
    if (strlen(r->metrics[j].name) == len - 4 && strncmp(r->metrics[j].name, n, len - 4) == 0) return 1;
  return 0;
}

static double stderr_for(const qlm_result *r, const char *name) {
  char key[48];
  snprintf(key, sizeof key, "%s_err", name);
  return qlm_result_get(r, key);
}

static int put_result(qlm_db *db, int64_t run_id, int idx, const qlm_result *r, qlm_error *err) {
  int64_t rid;
  if (run_sql(db,
              "INSERT INTO results(run_id, idx, task, protocol, data, model_path, method, bits, tokens, seconds)"
              " VALUES(?,?,?,?,?,?,?,?,?,?)",
              &rid, err, "iisssssdid", run_id, (int64_t)idx, r->task, r->protocol[0] ? r->protocol : NULL,
              r->data[0] ? r->data : NULL, r->model[0] ? r->model : NULL, r->method, r->bits, (int64_t)r->tokens,
              r->seconds))
    return err->code;
  int n = r->n_metrics < QLM_RESULT_MAX_METRICS ? r->n_metrics : QLM_RESULT_MAX_METRICS;
  for (int i = 0; i < n; i++) {
    if (is_stderr_of_other(r, i)) continue;
    const qlm_result_metric *m = &r->metrics[i];
    if (run_sql(db, "INSERT OR REPLACE INTO metrics(result_id, name, value, stderr) VALUES(?,?,?,?)", NULL, err, "isdd",
                rid, m->name, m->value, stderr_for(r, m->name)))
      return err->code;
  }
  int ns = r->n_settings < QLM_RESULT_MAX_SETTINGS ? r->n_settings : QLM_RESULT_MAX_SETTINGS;
  for (int i = 0; i < ns; i++)
    if (run_sql(db, "INSERT OR REPLACE INTO result_settings(result_id, key, value) VALUES(?,?,?)", NULL, err, "iss",
                rid, r->settings[i].key, r->settings[i].value))
      return err->code;
  return QLM_OK;
}

static void component(const qlm_meter *m, const qlm_energy_component *(*get)(const qlm_energy *), const char **kind,
                      const char **method) {
  const qlm_energy_component *c = m->energy ? get(m->energy) : NULL;
  *kind = c ? qlm_energy_kind_name(c->kind) : "none";
  *method = c ? c->method : NULL;
}

static int put_phases(qlm_db *db, int64_t run_id, const qlm_meter *m, qlm_error *err) {
  const char *ck, *cm, *rk, *rmeth, *gk, *gm;
  component(m, qlm_energy_cpu, &ck, &cm);
  component(m, qlm_energy_ram, &rk, &rmeth);
  component(m, qlm_energy_gpu, &gk, &gm);
  const char *country = m->grid.iso3[0] ? m->grid.iso3 : NULL;
  for (int i = 0; i < m->n_phases && i < QLM_METER_MAX_PHASES; i++) {
    const qlm_phase *p = &m->phases[i];
    if (run_sql(db,
                "INSERT INTO phases(run_id, name, count, wall_s, user_s, sys_s, rss_start, peak_rss, peak_method,"
                " weight_bytes, kv_bytes, tokens, cpu_kwh, ram_kwh, gpu_kwh, gpu_mem_peak, cpu_energy, ram_energy,"
                " gpu_energy, cpu_method, ram_method, gpu_method, co2_g, country, g_per_kwh, pue)"
                " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                NULL, err, "isidddiisiiidddissssssdsdd", run_id, p->name, (int64_t)p->count, p->wall_s, p->user_s,
                p->sys_s, (int64_t)p->rss_start, (int64_t)p->peak_rss, qlm_meter_peak_method(m),
                (int64_t)p->weight_bytes, (int64_t)p->kv_bytes, (int64_t)p->tokens, qlm_j_to_kwh(p->cpu_j),
                qlm_j_to_kwh(p->ram_j), qlm_j_to_kwh(p->gpu_j), (int64_t)p->gpu_mem_peak, ck, rk, gk, cm, rmeth, gm,
                qlm_phase_co2_g(m, p), country, m->grid.g_per_kwh, m->pue > 0 ? m->pue : 1.0))
      return err->code;
  }
  return QLM_OK;
}

static int put_artefact(qlm_db *db, int64_t run_id, const qlm_db_artefact *a, qlm_error *err) {
  char hex[65];
  const char *sha = a->sha256;
  double bytes = NAN;
  struct stat st;
  if (a->path && stat(a->path, &st) == 0 && S_ISREG(st.st_mode)) {
    bytes = (double)st.st_size;
    if (!sha && qlm_sha256_file(a->path, hex, err) == QLM_OK) sha = hex;
  }
  return run_sql(db, "INSERT INTO artefacts(run_id, path, kind, sha256, bytes) VALUES(?,?,?,?,?)", NULL, err, "isssd",
                 run_id, a->path ? a->path : "", a->kind ? a->kind : "file", sha, bytes);
}

static int record(qlm_db *db, const qlm_db_run *run, const qlm_result *results, int n_results, const qlm_meter *meter,
                  int64_t *run_id, qlm_error *err) {
  qlm_db_machine detected;
  const qlm_db_machine *mc = run->machine;
  if (!mc) qlm_db_machine_detect(&detected), mc = &detected;
  char uuid[40], now[40];
  if (run->uuid) snprintf(uuid, sizeof uuid, "%s", run->uuid);
  else if (meter && meter->run_id[0]) snprintf(uuid, sizeof uuid, "%s", meter->run_id);
  else random_uuid(uuid);
  iso_now(now, sizeof now);
  const char *started = run->started ? run->started : meter && meter->started[0] ? meter->started : now;
  int64_t model_id = -1, id;
  if (run->model && put_model(db, run->model, &model_id, err)) return err->code;
  if (run_sql(db,
              "INSERT INTO runs(uuid, command, started, finished, qlm_version, git_commit, cpu_model, cores, ram_bytes,"
              " simd, hostname, command_line, model_id, label) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
              &id, err, "sssssssidsssds", uuid, run->command, started, now, QLM_VERSION, QLM_GIT_COMMIT,
              mc->cpu_model[0] ? mc->cpu_model : NULL, (int64_t)mc->cores, mc->ram_bytes ? (double)mc->ram_bytes : NAN,
              mc->simd[0] ? mc->simd : NULL, mc->hostname[0] ? mc->hostname : NULL, run->command_line,
              model_id >= 0 ? (double)model_id : NAN, run->label))
    return err->code;
  if (run->quant && put_quant(db, id, run->quant, err)) return err->code;
  for (int i = 0; i < n_results; i++)
    if (put_result(db, id, i, &results[i], err)) return err->code;
  if (meter && put_phases(db, id, meter, err)) return err->code;
  for (int i = 0; i < run->n_artefacts; i++)
    if (put_artefact(db, id, &run->artefacts[i], err)) return err->code;
  if (run_id) *run_id = id;
  return QLM_OK;
}

int qlm_db_record_run(qlm_db *db, const qlm_db_run *run, const qlm_result *results, int n_results,
                      const qlm_meter *meter, int64_t *run_id, qlm_error *err) {
  if (!run || !run->command || n_results < 0 || (n_results && !results) || run->n_artefacts < 0)
    return qlm_fail(err, QLM_EINTERNAL, "%s: record_run: bad arguments", db->path);
  db->rows = 0;
  if (exec(db, "BEGIN IMMEDIATE", "starting the run's transaction", err)) return err->code;
  int rc = record(db, run, results, n_results, meter, run_id, err);
  if (!rc) rc = exec(db, "COMMIT", "committing the run", err);
  if (rc) sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
  return rc;
}

int qlm_db_find_run(qlm_db *db, const char *spec, int64_t *run_id, qlm_error *err) {
  size_t n = strlen(spec);
  if (n == 0 || n > 36) return qlm_fail(err, QLM_EUSAGE, "%s: '%s' is not a run id or uuid", db->path, spec);
  if (strspn(spec, "0123456789") == n && n <= 18) {
    int64_t id = strtoll(spec, NULL, 10);
    char buf[24];
    snprintf(buf, sizeof buf, "%lld", (long long)id);
    if (query_id(db, "SELECT id FROM runs WHERE id = CAST(? AS INTEGER)", buf) == id) return *run_id = id, QLM_OK;
  }
  if (n < 4 || strspn(spec, "0123456789abcdef-") != n)
    return qlm_fail(err, QLM_EUSAGE, "%s: no run '%s' (give runs.id or at least 4 hex digits of the uuid)", db->path,
                    spec);
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db->h, "SELECT id FROM runs WHERE substr(uuid, 1, ?) = ? LIMIT 2", -1, &st, NULL) != SQLITE_OK)
    return db_fail(db, err, QLM_EIO, "looking up a run");
  sqlite3_bind_int(st, 1, (int)n);
  sqlite3_bind_text(st, 2, spec, -1, SQLITE_TRANSIENT);
  int found = 0;
  while (sqlite3_step(st) == SQLITE_ROW) *run_id = sqlite3_column_int64(st, 0), found++;
  sqlite3_finalize(st);
  if (found == 1) return QLM_OK;
  return qlm_fail(err, QLM_EUSAGE, "%s: %s run '%s'", db->path, found ? "more than one" : "no", spec);
}
