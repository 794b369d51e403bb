/* co2.h — grid carbon intensity by country and the CO₂ formula.
 *
 *   emissions (g CO₂e) = energy (kWh) × carbon intensity (g CO₂e/kWh) × PUE
 *
 * Energy is what a run stores; CO₂ is always derived, so a stored run can be re-expressed for
 * any other grid (qlm_co2_grams with another row's intensity) without running it again.
 * Every row of the table names its source and the year of the figure. */
#ifndef QLM_CO2_H
#define QLM_CO2_H

#include "core/error.h"

typedef struct qlm_grid {
  const char *iso3;      /* ISO-3166 alpha-3 ("WLD" for the world average) */
  const char *name;      /* country name */
  double g_per_kwh;      /* grid carbon intensity, g CO₂e per kWh */
  int year;              /* year the figure describes */
  const char *source;    /* where the figure comes from */
} qlm_grid;

/* The table, terminated by a row with iso3 == NULL. */
const qlm_grid *qlm_grid_table(void);
/* Row for an alpha-3 code (case-insensitive), or NULL. */
const qlm_grid *qlm_grid_find(const char *iso3);
/* The world-average row (the default when no country is given). */
const qlm_grid *qlm_grid_world(void);

/* Grams of CO₂e for kwh at an intensity (g/kWh) and a PUE (>= 1 in practice; 1.0 = none). */
double qlm_co2_grams(double kwh, double g_per_kwh, double pue);

/* Joules -> kWh (1 kWh = 3.6e6 J). */
static inline double qlm_j_to_kwh(double j) { return j / 3.6e6; }

/* Resolve the grid for a run: --carbon-intensity (>= 0) wins over --country; neither = world.
 * Fails with QLM_EUSAGE for an unknown country code, listing the known ones. */
typedef struct qlm_grid_choice {
  char iso3[8];          /* the country used ("" when only an intensity was given) */
  const char *name;
  double g_per_kwh;
  char source[160];      /* the row's source and year, or "--carbon-intensity" */
} qlm_grid_choice;
int qlm_grid_choose(const char *country, double carbon_intensity, qlm_grid_choice *out, qlm_error *err);

#endif
