"""Sign-in throttling: the token endpoint and the two sign-in pages, per account and per address.

Without it a password could be guessed at the server's full speed.  Every attempt counts, right or
wrong.  The address is the client's as the proxies in front say (``RTV_PROXIES``, DRF's
``NUM_PROXIES``: with none, a client's own ``X-Forwarded-For`` is not believed).  The limits
(``RTV_SIGN_IN_RATE_PER_ACCOUNT``, ``..._PER_ADDRESS``) are generous for people (a device signs in
once, then refreshes) and slow for a guesser.  The counts live in the cache: Redis in production,
so every web worker shares them."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from rest_framework.throttling import SimpleRateThrottle


def _username(request: Any) -> str:
    data = getattr(request, "data", None)
    if data is None:  # a Django form post, not a DRF request
        data = request.POST
    try:
        value = data.get("username", "")
    except AttributeError:  # a JSON body that is not an object: no account named
        value = ""
    return str(value).strip().lower()[:150]


class _SignInThrottle(SimpleRateThrottle):
    setting = ""

    def get_rate(self) -> str | None:
        rate: str | None = getattr(settings, self.setting)
        return rate

    def key(self, request: Any) -> str:
        raise NotImplementedError

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.key(request)}


class SignInPerAccount(_SignInThrottle):
    """Guesses at one account from one address.  Keyed by address too: by account alone, anyone
    could keep a known account (an admin's) locked out by failing to sign in as it."""

    scope, setting = "sign_in_account", "RTV_SIGN_IN_RATE_PER_ACCOUNT"

    def key(self, request: Any) -> str:
        return f"{self.get_ident(request)}:{_username(request)}"


class SignInPerAddress(_SignInThrottle):
    scope, setting = "sign_in_address", "RTV_SIGN_IN_RATE_PER_ADDRESS"

    def key(self, request: Any) -> str:
        return str(self.get_ident(request))


SIGN_IN_THROTTLES = (SignInPerAccount, SignInPerAddress)


def throttled_sign_in(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A sign-in page's view with the API's limits on its posts: past them, a 429 page saying when
    to try again, and the password is not checked."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "POST":
            waits = [t.wait() or 0 for t in (cls() for cls in SIGN_IN_THROTTLES) if not t.allow_request(request, None)]
            if waits:
                seconds = int(max(waits)) + 1
                response = HttpResponse(f"Too many sign-in attempts. Try again in {seconds} seconds.",
                                        status=429, content_type="text/plain; charset=utf-8")
                response["Retry-After"] = str(seconds)
                return response
        return view(request, *args, **kwargs)

    return wrapped
