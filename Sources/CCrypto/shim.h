// Debian's libssl-dev (OpenSSL's libcrypto): SHA-256, HMAC-SHA256 and MD5 for signing S3
// requests (ObjectStore's SigV4) and checking what an interrupted upload left.
#include <openssl/evp.h>
#include <openssl/hmac.h>
