-- Orders now live through a saga: stored `pending` before the card is charged, then
-- `confirmed` (paid), `rejected` (the charge was refused) or `cancelled` (the payment
-- failed later; the stock went back). `reason` says why an order was rejected or
-- cancelled. A pending or rejected order has no receipt yet: receipt_id and
-- card_last4 are '' until it is paid.
ALTER TABLE orders ADD COLUMN reason TEXT;
