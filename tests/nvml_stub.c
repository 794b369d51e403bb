/* nvml_stub.c — a fake libnvidia-ml for test_measure: the entry points src/measure/energy.c
 * resolves with dlsym, driven by nvml_stub_set() (the test dlopens the same file and gets the
 * same handle, so it shares these statics). */
#include <string.h>

static int g_devices = 1, g_has_counter = 1;
static unsigned long long g_energy_mj;
static unsigned int g_power_mw;
static int g_dev; /* the handle's target */

void nvml_stub_set(int devices, int has_counter, unsigned long long energy_mj, unsigned int power_mw);
void nvml_stub_set(int devices, int has_counter, unsigned long long energy_mj, unsigned int power_mw) {
  g_devices = devices;
  g_has_counter = has_counter;
  g_energy_mj = energy_mj;
  g_power_mw = power_mw;
}

int nvmlInit_v2(void);
int nvmlShutdown(void);
int nvmlDeviceGetCount_v2(unsigned int *n);
int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **h);
int nvmlDeviceGetName(void *h, char *name, unsigned int len);
int nvmlDeviceGetTotalEnergyConsumption(void *h, unsigned long long *mj);
int nvmlDeviceGetPowerUsage(void *h, unsigned int *mw);

int nvmlInit_v2(void) { return 0; }
int nvmlShutdown(void) { return 0; }
int nvmlDeviceGetCount_v2(unsigned int *n) {
  *n = (unsigned int)g_devices;
  return 0;
}
int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **h) {
  if ((int)i >= g_devices) return 2; /* NVML_ERROR_INVALID_ARGUMENT */
  *h = &g_dev;
  return 0;
}
int nvmlDeviceGetName(void *h, char *name, unsigned int len) {
  (void)h;
  if (len) {
    strncpy(name, "Stub GPU", len - 1);
    name[len - 1] = 0;
  }
  return 0;
}
int nvmlDeviceGetTotalEnergyConsumption(void *h, unsigned long long *mj) {
  (void)h;
  if (!g_has_counter) return 3; /* NVML_ERROR_NOT_SUPPORTED */
  *mj = g_energy_mj;
  return 0;
}
int nvmlDeviceGetPowerUsage(void *h, unsigned int *mw) {
  (void)h;
  *mw = g_power_mw;
  return 0;
}
