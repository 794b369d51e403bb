/* results.c — the evaluation record and its JSON form (cJSON). */
#include "eval/results.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void copy_str(char *dst, size_t cap, const char *s) {
  snprintf(dst, cap, "%s", s ? s : "");
}

void qlm_result_init(qlm_result *r, const char *task, const qlm_source *src) {
  memset(r, 0, sizeof *r);
  copy_str(r->task, sizeof r->task, task);
  copy_str(r->method, sizeof r->method, "none");
  r->bits = NAN;
  if (!src) return;
  copy_str(r->model, sizeof r->model, src->path);
  const qlm_meta *m = qlm_source_meta(src, "qlm.quantize.method");
  if (!m || m->type != QLM_META_STRING) m = qlm_source_meta(src, "qlm.quantize.type");
  if (m && m->type == QLM_META_STRING) copy_str(r->method, sizeof r->method, m->v.s);
  /* bits per weight: all tensor bytes over all parameters (what the file costs per weight) */
  double bytes = 0;
  for (int i = 0; i < src->n_tensors; i++) bytes += (double)src->tensors[i].nbytes;
  int64_t n = qlm_source_n_params(src);
  if (n > 0) r->bits = 8.0 * bytes / (double)n;
}

int qlm_result_add(qlm_result *r, const char *name, double value, qlm_error *err) {
  if (r->n_metrics >= QLM_RESULT_MAX_METRICS || strlen(name) >= sizeof r->metrics[0].name)
    return qlm_fail(err, QLM_ELIMIT, "result: cannot add metric '%s' (record full or name too long)", name);
  qlm_result_metric *m = &r->metrics[r->n_metrics++];
  copy_str(m->name, sizeof m->name, name);
  m->value = value;
  return QLM_OK;
}

int qlm_result_set(qlm_result *r, const char *key, const char *value, qlm_error *err) {
  if (r->n_settings >= QLM_RESULT_MAX_SETTINGS || strlen(key) >= sizeof r->settings[0].key ||
      strlen(value) >= sizeof r->settings[0].value)
    return qlm_fail(err, QLM_ELIMIT, "result: cannot add setting '%s' (record full or too long)", key);
  qlm_result_setting *s = &r->settings[r->n_settings++];
  copy_str(s->key, sizeof s->key, key);
  copy_str(s->value, sizeof s->value, value);
  return QLM_OK;
}

double qlm_result_get(const qlm_result *r, const char *name) {
  for (int i = 0; i < r->n_metrics; i++)
    if (strcmp(r->metrics[i].name, name) == 0) return r->metrics[i].value;
  return NAN;
}

static cJSON *num_or_null(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

char *qlm_result_to_json(const qlm_result *r, qlm_error *err) {
  cJSON *o = cJSON_CreateObject(), *metrics = cJSON_CreateObject(), *settings = cJSON_CreateObject();
  char *s = NULL;
  if (!o || !metrics || !settings) goto done;
  cJSON_AddStringToObject(o, "task", r->task);
  cJSON_AddStringToObject(o, "model", r->model);
  cJSON_AddStringToObject(o, "method", r->method);
  cJSON_AddItemToObject(o, "bits", num_or_null(r->bits));
  cJSON_AddStringToObject(o, "protocol", r->protocol);
  cJSON_AddStringToObject(o, "data", r->data);
  cJSON_AddNumberToObject(o, "tokens", (double)r->tokens);
  cJSON_AddNumberToObject(o, "seconds", r->seconds);
  for (int i = 0; i < r->n_metrics; i++) cJSON_AddItemToObject(metrics, r->metrics[i].name, num_or_null(r->metrics[i].value));
  for (int i = 0; i < r->n_settings; i++) cJSON_AddStringToObject(settings, r->settings[i].key, r->settings[i].value);
  cJSON_AddItemToObject(o, "metrics", metrics);
  metrics = NULL;
  cJSON_AddItemToObject(o, "settings", settings);
  settings = NULL;
  s = cJSON_PrintUnformatted(o);
done:
  cJSON_Delete(o);
  cJSON_Delete(metrics);
  cJSON_Delete(settings);
  if (!s) qlm_fail(err, QLM_ENOMEM, "result: out of memory writing JSON");
  return s;
}

int qlm_result_print_json(const qlm_result *r, FILE *f, qlm_error *err) {
  char *s = qlm_result_to_json(r, err);
  if (!s) return QLM_ENOMEM;
  fprintf(f, "%s\n", s);
  free(s);
  return ferror(f) ? qlm_fail(err, QLM_EIO, "result: cannot write JSON output") : QLM_OK;
}
