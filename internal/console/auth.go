package console

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"
)

// cookieName is the console's session cookie: an HMAC of the token, so the
// browser never holds the token itself.
const cookieName = "firehose_console"

// sessionValue is the cookie value a browser gets once it gave the token.
func sessionValue(token string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("firehose console session v1"))
	return hex.EncodeToString(m.Sum(nil))
}

// equal compares a and b in constant time, whatever their lengths (both are
// hashed first, so the time says nothing of the token's length either).
func equal(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

// authorized says whether r carries the token: an Authorization: Bearer
// header, or the session cookie the login form set.
func (c *Console) authorized(r *http.Request) bool {
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		return ok && equal(tok, c.token)
	}
	ck, err := r.Cookie(cookieName)
	return err == nil && equal(ck.Value, c.session)
}

// sameOrigin says whether a form POST comes from the console's own pages: a
// browser sends Origin with every POST, and another site's page cannot
// forge it. A request without Origin (curl, a script with the token) is not
// a browser's cross-site request. A browser's Sec-Fetch-Site, when it
// sends one, must say the same.
func sameOrigin(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" && s != "none" {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}
