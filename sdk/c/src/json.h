/* A minimal JSON reader for the node configuration: a tree of values, freed at once. */
#ifndef FLUJO_JSON_H
#define FLUJO_JSON_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json_value {
    json_type type;
    bool boolean;
    double number;
    char *string;               /* JSON_STRING, NUL-terminated UTF-8 */
    size_t count;               /* JSON_ARRAY / JSON_OBJECT */
    char **keys;                /* JSON_OBJECT */
    struct json_value **items;  /* JSON_ARRAY / JSON_OBJECT values */
} json_value;

/* Parses `text`; NULL on error, with a message in `error` (which holds `size` bytes). */
json_value *json_parse(const char *text, char *error, size_t size);
void json_free(json_value *value);

/* The member `key` of an object (NULL when absent or not an object). */
const json_value *json_get(const json_value *object, const char *key);
/* Typed members, with a fallback when absent or of another type. */
const char *json_string(const json_value *object, const char *key, const char *fallback);
double json_number(const json_value *object, const char *key, double fallback);
bool json_bool(const json_value *object, const char *key, bool fallback);

#endif
