/* JSON Web Tokens (RFC 7519), HS256 only: what the reference design's
 * SecurityManager accepts (`jwt.decode(token, secret, algorithms=['HS256'])`),
 * and what REST/WebSocket workers send as bearer tokens. Any other algorithm,
 * `none` included, is refused before the signature is even looked at. */
#ifndef UCGW_JWT_H
#define UCGW_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JWT_MAX_LEN 8192   /* a longer token is refused unread */
#define JWT_LEEWAY_S 30    /* clock skew tolerated on exp and nbf */

enum jwt_status {
	JWT_OK = 0,
	JWT_MALFORMED,      /* not three base64url parts, bad JSON, a claim of the wrong type */
	JWT_BAD_ALG,        /* alg is not HS256 (none, HS512, RS256, ...), or typ is not JWT */
	JWT_BAD_SIGNATURE,  /* the HMAC does not match */
	JWT_EXPIRED,        /* now > exp + leeway */
	JWT_NOT_YET_VALID,  /* now < nbf - leeway */
};

struct jwt_claims {
	bool has_exp, has_nbf, has_iat;
	int64_t exp, nbf, iat;
	char sub[128]; /* "" when absent; truncated when longer */
};

/* Verify token against secret at time now (seconds since the epoch). On
 * anything but JWT_OK, reason says why in a few words fit for a client and an
 * audit log: it never quotes the token or the secret. claims may be NULL. */
enum jwt_status jwt_verify(const char *token, size_t len, const void *secret, size_t secret_len, int64_t now,
			   struct jwt_claims *claims, char *reason, size_t reasonlen);
const char *jwt_status_str(enum jwt_status s);

/* A fresh token {"alg":"HS256","typ":"JWT"}.{"sub":subject,"iat":now,"exp":now+ttl_s},
 * malloc'd. subject may be NULL (no sub claim). */
char *jwt_mint(const char *secret, const char *subject, unsigned ttl_s);
/* The same with the time and a secret of any bytes given (tests, fuzzing). */
char *jwt_mint_at(const void *secret, size_t secret_len, const char *subject, int64_t now, unsigned ttl_s);

#endif
