-- wrk script: every request places one order (2 keyboards, 3 cables, a good card).
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = [[{"customer_id": 2,
  "lines": [{"sku": "KB-001", "quantity": 2}, {"sku": "CB-004", "quantity": 3}],
  "card": {"number": "4242 4242 4242 4242", "expiry_month": 12, "expiry_year": 2030}}]]
