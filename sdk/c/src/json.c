/* A minimal recursive-descent JSON reader (RFC 8259), enough for FLUJO_NODE_CONFIG. */
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

typedef struct {
    const char *at;
    char *error;
    size_t size;
    bool failed;
} reader;

static json_value *parse_value(reader *r, int depth);

static void fail(reader *r, const char *what) {
    if (!r->failed)
        snprintf(r->error, r->size, "%s near \"%.20s\"", what, r->at);
    r->failed = true;
}

static void skip_space(reader *r) {
    while (*r->at == ' ' || *r->at == '\t' || *r->at == '\n' || *r->at == '\r')
        r->at++;
}

static json_value *new_value(json_type type) {
    json_value *value = calloc(1, sizeof *value);
    if (value)
        value->type = type;
    return value;
}

static void put_utf8(char **out, unsigned code) {
    char *o = *out;
    if (code < 0x80) {
        *o++ = (char)code;
    } else if (code < 0x800) {
        *o++ = (char)(0xC0 | code >> 6);
        *o++ = (char)(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
        *o++ = (char)(0xE0 | code >> 12);
        *o++ = (char)(0x80 | (code >> 6 & 0x3F));
        *o++ = (char)(0x80 | (code & 0x3F));
    } else {
        *o++ = (char)(0xF0 | code >> 18);
        *o++ = (char)(0x80 | (code >> 12 & 0x3F));
        *o++ = (char)(0x80 | (code >> 6 & 0x3F));
        *o++ = (char)(0x80 | (code & 0x3F));
    }
    *out = o;
}

static bool hex4(reader *r, unsigned *code) {
    *code = 0;
    for (int i = 0; i < 4; i++) {
        char c = *r->at++;
        *code <<= 4;
        if (c >= '0' && c <= '9') *code |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') *code |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') *code |= (unsigned)(c - 'A' + 10);
        else return false;
    }
    return true;
}

/* A string after its opening quote; escapes never make it longer than the source. */
static char *parse_string(reader *r) {
    const char *end = r->at;
    while (*end && *end != '"') {
        if (*end == '\\' && end[1]) end++;
        end++;
    }
    if (!*end) {
        fail(r, "unterminated string");
        return NULL;
    }
    char *text = malloc((size_t)(end - r->at) + 1), *out = text;
    if (!text) {
        fail(r, "out of memory");
        return NULL;
    }
    while (*r->at != '"') {
        char c = *r->at++;
        if ((unsigned char)c < 0x20) {
            fail(r, "control character in string");
            break;
        }
        if (c != '\\') {
            *out++ = c;
            continue;
        }
        char e = *r->at++;
        unsigned code;
        switch (e) {
        case '"': case '\\': case '/': *out++ = e; break;
        case 'b': *out++ = '\b'; break;
        case 'f': *out++ = '\f'; break;
        case 'n': *out++ = '\n'; break;
        case 'r': *out++ = '\r'; break;
        case 't': *out++ = '\t'; break;
        case 'u':
            if (!hex4(r, &code)) {
                fail(r, "bad \\u escape");
                break;
            }
            if (code >= 0xD800 && code < 0xDC00 && r->at[0] == '\\' && r->at[1] == 'u') {
                unsigned low;
                r->at += 2;
                if (hex4(r, &low) && low >= 0xDC00 && low < 0xE000)
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
            }
            put_utf8(&out, code);
            break;
        default: fail(r, "bad escape");
        }
        if (r->failed)
            break;
    }
    *out = '\0';
    if (r->failed) {
        free(text);
        return NULL;
    }
    r->at++; /* closing quote */
    return text;
}

static bool append(json_value *container, char *key, json_value *item) {
    size_t n = container->count + 1;
    json_value **items = realloc(container->items, n * sizeof *items);
    if (!items) return false;
    container->items = items;
    if (container->type == JSON_OBJECT) {
        char **keys = realloc(container->keys, n * sizeof *keys);
        if (!keys) return false;
        container->keys = keys;
        keys[n - 1] = key;
    }
    items[n - 1] = item;
    container->count = n;
    return true;
}

static json_value *parse_container(reader *r, int depth, bool object) {
    json_value *value = new_value(object ? JSON_OBJECT : JSON_ARRAY);
    char close = object ? '}' : ']';
    r->at++;
    skip_space(r);
    if (*r->at == close) {
        r->at++;
        return value;
    }
    while (!r->failed) {
        char *key = NULL;
        skip_space(r);
        if (object) {
            if (*r->at != '"') {
                fail(r, "expected a key");
                break;
            }
            r->at++;
            if (!(key = parse_string(r))) break;
            skip_space(r);
            if (*r->at != ':') {
                free(key);
                fail(r, "expected ':'");
                break;
            }
            r->at++;
        }
        json_value *item = parse_value(r, depth + 1);
        if (!item || !append(value, key, item)) {
            free(key);
            json_free(item);
            fail(r, "bad value");
            break;
        }
        skip_space(r);
        if (*r->at == ',') {
            r->at++;
        } else if (*r->at == close) {
            r->at++;
            return value;
        } else {
            fail(r, object ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    json_free(value);
    return NULL;
}

static json_value *parse_value(reader *r, int depth) {
    skip_space(r);
    if (depth > MAX_DEPTH) {
        fail(r, "nested too deep");
        return NULL;
    }
    json_value *value;
    switch (*r->at) {
    case '{': return parse_container(r, depth, true);
    case '[': return parse_container(r, depth, false);
    case '"':
        r->at++;
        value = new_value(JSON_STRING);
        if (!(value->string = parse_string(r))) {
            free(value);
            return NULL;
        }
        return value;
    case 't': case 'f': case 'n': {
        static const char *words[] = {"true", "false", "null"};
        for (int i = 0; i < 3; i++) {
            size_t n = strlen(words[i]);
            if (strncmp(r->at, words[i], n) == 0) {
                r->at += n;
                value = new_value(i == 2 ? JSON_NULL : JSON_BOOL);
                value->boolean = i == 0;
                return value;
            }
        }
        fail(r, "unknown word");
        return NULL;
    }
    default: {
        char *end;
        double number = strtod(r->at, &end);
        if (end == r->at) {
            fail(r, "unexpected character");
            return NULL;
        }
        r->at = end;
        value = new_value(JSON_NUMBER);
        value->number = number;
        return value;
    }
    }
}

json_value *json_parse(const char *text, char *error, size_t size) {
    reader r = {text, error, size, false};
    json_value *value = parse_value(&r, 0);
    skip_space(&r);
    if (value && *r.at) {
        fail(&r, "trailing characters");
        json_free(value);
        return NULL;
    }
    return value;
}

void json_free(json_value *value) {
    if (!value) return;
    for (size_t i = 0; i < value->count; i++) {
        json_free(value->items[i]);
        if (value->keys) free(value->keys[i]);
    }
    free(value->items);
    free(value->keys);
    free(value->string);
    free(value);
}

const json_value *json_get(const json_value *object, const char *key) {
    if (!object || object->type != JSON_OBJECT) return NULL;
    for (size_t i = 0; i < object->count; i++)
        if (strcmp(object->keys[i], key) == 0) return object->items[i];
    return NULL;
}

const char *json_string(const json_value *object, const char *key, const char *fallback) {
    const json_value *v = json_get(object, key);
    return v && v->type == JSON_STRING ? v->string : fallback;
}

double json_number(const json_value *object, const char *key, double fallback) {
    const json_value *v = json_get(object, key);
    return v && v->type == JSON_NUMBER ? v->number : fallback;
}

bool json_bool(const json_value *object, const char *key, bool fallback) {
    const json_value *v = json_get(object, key);
    return v && v->type == JSON_BOOL ? v->boolean : fallback;
}
