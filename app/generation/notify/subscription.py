"""A submission's webhook, checked: the target is safe to call and the events are known.

A key may carry a default target, used when a submission names none. The job keeps the
key's id so that deliveries are signed with that key's secret, even after rotations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import InvalidParamsError
from ..job import DEFAULT_WEBHOOK_EVENTS, WEBHOOK_EVENTS, Webhook
from ..settings import WebhookSettings
from .targets import Resolver, UnsafeTarget, check_target, system_resolver

NO_OPEN_SECRET = (
    "this server has no webhook signing secret: its operator must set WEBHOOK_SECRET "
    "(`flask --app wsgi webhooks new-secret` prints one) or SECRET_KEY"
)


def webhook_for(
    url: Any,
    events: Any,
    *,
    key_id: str | None,
    key_default: str | None,
    settings: WebhookSettings,
    resolve: Resolver = system_resolver,
) -> Webhook | None:
    """The webhook a submission asks for (`url`, `events` as the client sent them; None:
    not given), or its key's default target; InvalidParamsError naming what is wrong
    (open mode without a signing secret included: its deliveries could not be signed)."""
    if url is None and events is not None and key_default is None:
        raise InvalidParamsError({"webhook_events": "given without a webhook"})
    target = url if url is not None else key_default
    if target is None:
        return None
    fields: dict[str, str] = {}
    chosen = _events(events, fields)
    if not isinstance(target, str):
        fields["webhook"] = "must be an https URL"
    else:
        try:
            check_target(
                target,
                allow_http=settings.allow_http,
                allow_private=settings.allow_private,
                resolve=resolve,
            )
        except UnsafeTarget as refused:
            fields["webhook"] = str(refused)
    if key_id is None and not settings.open_secrets and "webhook" not in fields:
        fields["webhook"] = NO_OPEN_SECRET
    if fields:
        raise InvalidParamsError(fields)
    return Webhook(target, chosen, key_id)


def _events(events: Any, fields: dict[str, str]) -> tuple[str, ...]:
    """The events in their canonical order; an error in `fields` if they are not a
    non-empty list of known event names."""
    if events is None:
        return DEFAULT_WEBHOOK_EVENTS
    known = ", ".join(WEBHOOK_EVENTS)
    if not isinstance(events, Sequence) or isinstance(events, str) or not events:
        fields["webhook_events"] = f"a non-empty list of: {known}"
        return ()
    unknown = [event for event in events if event not in WEBHOOK_EVENTS]
    if unknown:
        fields["webhook_events"] = f"unknown event {str(unknown[0])[:32]!r}; known: {known}"
        return ()
    if len(set(events)) != len(events):
        fields["webhook_events"] = "each event at most once"
        return ()
    return tuple(event for event in WEBHOOK_EVENTS if event in events)
