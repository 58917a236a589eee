/*
 * Just enough JSON for the stats service: read one string field of a
 * top-level object, and write a string with escapes. The library has
 * already checked that payloads are valid JSON.
 */
#ifndef JSON_OWNER_H
#define JSON_OWNER_H
#include <stddef.h>

/* The value of the top-level string field `key` of the JSON object `json`,
 * unescaped, as a malloc'd string the caller frees; NULL when there is no
 * such string field (or the text is not an object). */
char *json_string_field(const char *json, const char *key);

/* Writes `s` as a JSON string (with quotes) into `out` (size `cap`, always
 * NUL-terminated); returns the length written. */
size_t json_write_string(char *out, size_t cap, const char *s);

#endif
