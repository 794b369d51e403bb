/* mapfile.h — read-only memory mapping of a whole file. */
#ifndef QLM_MAPFILE_H
#define QLM_MAPFILE_H

#include <stddef.h>
#include "core/error.h"

typedef struct qlm_mapfile {
  const unsigned char *data; /* [size] bytes, read-only; NULL for an empty file */
  size_t size;               /* file size in bytes */
} qlm_mapfile;

/* Map `path`; on failure returns QLM_EIO with "path: reason". */
int qlm_map_file(const char *path, qlm_mapfile *m, qlm_error *err);
void qlm_unmap_file(qlm_mapfile *m);

/* Read a whole (small) file into a NUL-terminated malloc'd buffer; refuses files above max_bytes
 * with QLM_ELIMIT. *len receives the length without the terminator (may be NULL). */
int qlm_read_file(const char *path, size_t max_bytes, char **out, size_t *len, qlm_error *err);

#endif
