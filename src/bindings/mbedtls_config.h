/*
** mbedtls_config.h: the additions to mbedTLS 2.28's default config.h for
** the static library the Linux build makes from Debian's source package
** (Makefile, "mbedTLS"), included as MBEDTLS_USER_CONFIG_FILE by the
** library and by src/bindings/tls.c alike.
**
** First Debian's own choices (debian/rules), so that the structures are
** laid out as in Debian's libmbedtls-dev headers and an installed
** libaiolua.a still links with the system's -lmbedtls.  Then the tuning
** (issue 12, measured with bench/tls.sh and callgrind; see README).
*/
#ifndef AIOLUA_MBEDTLS_CONFIG_H
#define AIOLUA_MBEDTLS_CONFIG_H

/* Debian 12's libmbedtls 2.28.3 */
#define MBEDTLS_DEPRECATED_WARNING
#define MBEDTLS_SSL_DTLS_SRTP
#define MBEDTLS_THREADING_C
#define MBEDTLS_THREADING_PTHREAD
#define MBEDTLS_CMAC_C
#define MBEDTLS_HAVEGE_C
#define MBEDTLS_MD2_C
#define MBEDTLS_MD4_C

/* Tuning.  Already in the defaults and kept: MBEDTLS_HAVE_ASM,
** MBEDTLS_AESNI_C (AES-NI and PCLMUL, detected at run time),
** MBEDTLS_ECP_NIST_OPTIM, MBEDTLS_ECP_FIXED_POINT_OPTIM, RSA blinding.
**
** ECP window 6 (default 4): point multiplications by the generator --
** the server's ECDHE key and ECDSA signatures -- use 5-bit combs instead
** of 4-bit ones. */
#define MBEDTLS_ECP_WINDOW_SIZE 6

/* MBEDTLS_MPI_WINDOW_SIZE stays 2: the constant-time table lookup of
** mbedTLS 2.28 reads every entry, so wider windows cost more than they
** save (callgrind, one RSA-2048 signature: 29.6M instructions at 2,
** 30.4M at 3, 42.3M at 5, 59.4M at 6). */

#endif
