// Debian's libcurl4-openssl-dev: HTTP and HTTPS for the S3 client (ObjectStore).
#include <curl/curl.h>

// curl_easy_setopt and curl_easy_getinfo are variadic, which Swift cannot call: one
// fixed-argument wrapper per argument type the client passes.

/// The callbacks curl calls with data: CURLOPT_WRITEFUNCTION, CURLOPT_READFUNCTION,
/// CURLOPT_HEADERFUNCTION.
typedef size_t (*chpox_curl_data_callback)(char *buffer, size_t size, size_t count, void *context);

static inline CURLcode chpox_curl_setopt_long(CURL *handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode chpox_curl_setopt_offset(CURL *handle, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(handle, option, value);
}

/// Strings are copied by curl (since 7.17), so a Swift string's temporary pointer is enough.
static inline CURLcode chpox_curl_setopt_string(CURL *handle, CURLoption option, const char *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode chpox_curl_setopt_pointer(CURL *handle, CURLoption option, void *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode chpox_curl_setopt_callback(CURL *handle, CURLoption option, chpox_curl_data_callback value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode chpox_curl_getinfo_long(CURL *handle, CURLINFO info, long *value) {
    return curl_easy_getinfo(handle, info, value);
}

/// CURLOPT_SEEKFUNCTION: rewinds an upload that curl sends again (a kept connection the
/// server had closed).
typedef int (*chpox_curl_seek_callback)(void *context, curl_off_t offset, int origin);

static inline CURLcode chpox_curl_setopt_seek(CURL *handle, chpox_curl_seek_callback value) {
    return curl_easy_setopt(handle, CURLOPT_SEEKFUNCTION, value);
}
