{
  "targets": [
    {
      "target_name": "meshca_native",
      "sources": ["ecdsa_verify.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror", "-fstack-protector-strong", "-D_FORTIFY_SOURCE=2"],
      "defines": ["NAPI_VERSION=8", "OPENSSL_SUPPRESS_DEPRECATED"]
    }
  ]
}
