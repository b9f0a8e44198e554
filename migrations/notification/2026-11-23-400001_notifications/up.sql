-- Notifications, owned by the notification service. Sending is simulated:
-- a notification is "sent" by storing it.

CREATE TABLE notifications (
    notification_id uuid        PRIMARY KEY,
    -- One notification per event: a second delivery of the same event finds
    -- this row and sends nothing.
    event_id        uuid        NOT NULL UNIQUE,
    customer_id     uuid        NOT NULL,
    order_id        uuid        NOT NULL,
    channel         text        NOT NULL CHECK (channel IN ('EMAIL', 'SMS')),
    -- The e-mail address or E.164 phone number it went to.
    recipient       text        NOT NULL CHECK (recipient <> ''),
    event_type      text        NOT NULL,
    subject         text        NOT NULL,
    body            text        NOT NULL,
    sent_at         timestamptz NOT NULL DEFAULT now()
);

-- ListNotifications: by customer or by order, newest first, keyset-paginated.
CREATE INDEX notifications_customer_sent ON notifications (customer_id, sent_at DESC, notification_id DESC);
CREATE INDEX notifications_order_sent ON notifications (order_id, sent_at DESC, notification_id DESC);

-- How to reach a customer, learnt from order.placed: events after it
-- (order.cancelled, payment.completed, ...) do not carry the phone number.
CREATE TABLE contacts (
    customer_id uuid        PRIMARY KEY,
    phone       text        NOT NULL CHECK (phone ~ '^\+[0-9]{8,15}$'),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
