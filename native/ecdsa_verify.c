/*
 * meshca's native ECDSA verifier for CSR self-signatures on P-256 and P-384.
 *
 * Why it exists: every public-key import Node offers (KeyObject, JWK, WebCrypto) ends in OpenSSL's
 * EC_KEY_check_key, whose n*Q == O test is a full scalar multiplication. On P-256 and P-384 the
 * cofactor is 1, so any point on the curve other than infinity already has order n and the test
 * can never fail for a point that decoded; it costs as much as the verify itself. Here the point is
 * decoded with EC_POINT_oct2point, which refuses coordinates >= p and points off the curve, and the
 * signature is checked with ECDSA_verify, which refuses non-canonical DER and r, s outside [1, n-1].
 * Those are the checks node:crypto runs too; test/pki-native-ecdsa.test.ts compares both.
 *
 * It uses the OpenSSL that Node itself is linked with (its headers ship with Node), so there is
 * no second crypto library. The EC_KEY functions are deprecated in OpenSSL 3 but present: the
 * EVP path is exactly the one that adds the redundant check.
 */
#include <node_api.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <openssl/sha.h>
#include <stdlib.h>

enum { CURVE_P256 = 0, CURVE_P384 = 1 };
enum { HASH_SHA256 = 0, HASH_SHA384 = 1, HASH_SHA512 = 2 };

/* One set of groups per Node environment (main thread or worker thread): no shared mutable state. */
typedef struct {
  EC_GROUP *groups[2];
} Curves;

static void free_curves(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  Curves *curves = data;
  EC_GROUP_free(curves->groups[0]);
  EC_GROUP_free(curves->groups[1]);
  free(curves);
}

/* A Uint8Array argument, or a TypeError. */
static int bytes_arg(napi_env env, napi_value value, const char *name, const unsigned char **data, size_t *length) {
  bool is_typed = false;
  napi_typedarray_type type;
  void *pointer = NULL;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, value, &type, length, &pointer, NULL, NULL) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", name);
    return 0;
  }
  *data = pointer;
  return 1;
}

static int int_arg(napi_env env, napi_value value, const char *name, int32_t max, int32_t *out) {
  if (napi_get_value_int32(env, value, out) != napi_ok || *out < 0 || *out > max) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", name);
    return 0;
  }
  return 1;
}

static size_t digest(int32_t hash, const unsigned char *data, size_t length, unsigned char *out) {
  switch (hash) {
    case HASH_SHA256: SHA256(data, length, out); return SHA256_DIGEST_LENGTH;
    case HASH_SHA384: SHA384(data, length, out); return SHA384_DIGEST_LENGTH;
    default: SHA512(data, length, out); return SHA512_DIGEST_LENGTH;
  }
}

/* 1 the signature is valid, 0 it is not, -1 the point is not a public key on the curve. */
static int32_t check(const EC_GROUP *group, int32_t hash, const unsigned char *point, size_t point_length,
                     const unsigned char *data, size_t data_length, const unsigned char *signature, size_t signature_length) {
  int32_t result = -1;
  EC_POINT *q = EC_POINT_new(group);
  EC_KEY *key = EC_KEY_new();
  if (q != NULL && key != NULL && point_length > 0 && point[0] == 0x04 &&
      EC_POINT_oct2point(group, q, point, point_length, NULL) == 1 && EC_POINT_is_at_infinity(group, q) == 0 &&
      EC_KEY_set_group(key, group) == 1 && EC_KEY_set_public_key(key, q) == 1) {
    unsigned char md[SHA512_DIGEST_LENGTH];
    size_t md_length = digest(hash, data, data_length, md);
    /* -1 is a signature that does not decode (or is not canonical DER): invalid, like node:crypto. */
    result = signature_length <= 0x7fffffff &&
             ECDSA_verify(0, md, (int)md_length, signature, (int)signature_length, key) == 1;
  }
  ERR_clear_error();
  EC_KEY_free(key);
  EC_POINT_free(q);
  return result;
}

/* verify(curve, hash, point, data, signature): curve 0 P-256 / 1 P-384; hash 0 SHA-256 / 1 SHA-384 / 2 SHA-512. */
static napi_value verify(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 5) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "verify(curve, hash, point, data, signature)");
    return NULL;
  }
  int32_t curve, hash;
  const unsigned char *point, *data, *signature;
  size_t point_length, data_length, signature_length;
  if (!int_arg(env, argv[0], "curve", CURVE_P384, &curve) || !int_arg(env, argv[1], "hash", HASH_SHA512, &hash) ||
      !bytes_arg(env, argv[2], "point", &point, &point_length) || !bytes_arg(env, argv[3], "data", &data, &data_length) ||
      !bytes_arg(env, argv[4], "signature", &signature, &signature_length))
    return NULL;
  Curves *curves = NULL;
  if (napi_get_instance_data(env, (void **)&curves) != napi_ok || curves == NULL || curves->groups[curve] == NULL) {
    napi_throw_error(env, "ERR_NATIVE_ECDSA", "the native ECDSA verifier is not initialised");
    return NULL;
  }
  napi_value out;
  napi_create_int32(env, check(curves->groups[curve], hash, point, point_length, data, data_length, signature, signature_length), &out);
  return out;
}

NAPI_MODULE_INIT() {
  Curves *curves = calloc(1, sizeof(Curves));
  if (curves == NULL) return NULL;
  curves->groups[CURVE_P256] = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
  curves->groups[CURVE_P384] = EC_GROUP_new_by_curve_name(NID_secp384r1);
  if (napi_set_instance_data(env, curves, free_curves, NULL) != napi_ok) {
    free_curves(env, curves, NULL);
    return NULL;
  }
  napi_value fn;
  if (napi_create_function(env, "verify", NAPI_AUTO_LENGTH, verify, NULL, &fn) != napi_ok ||
      napi_set_named_property(env, exports, "verify", fn) != napi_ok)
    return NULL;
  return exports;
}
