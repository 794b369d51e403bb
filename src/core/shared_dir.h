/* shared_dir.h — where qlm's default data and models live (the read-only "shared" folder).
 *
 * The defaults (WikiText-2 for ppl, TweetEval, MMLU, DailyDialog, the calibration text, the
 * stories260K model) are paths under one folder. It is found, in this order:
 *   1. $QLM_SHARED, when set and not empty (taken as given, even if it does not exist, so that a
 *      typo is reported with the path the user wrote);
 *   2. ../shared relative to the working directory, when it is a directory (the layout of a
 *      checkout beside the data, and what the README's commands assume);
 *   3. a folder named "shared" beside the executable or beside one of its parent folders
 *      (/work/main/build/qlm -> /work/main/build/shared, /work/main/shared, /work/shared),
 *      so that commands work from any directory;
 *   4. ../shared (which does not exist: the caller's "cannot open" error then names it). */
#ifndef QLM_SHARED_DIR_H
#define QLM_SHARED_DIR_H

#include <stddef.h>

/* The shared folder (a static string, resolved once per process). */
const char *qlm_shared_dir(void);

/* <shared folder>/<rel> into buf (truncated to cap, always terminated); returns buf. */
const char *qlm_shared_path(const char *rel, char *buf, size_t cap);

#endif
