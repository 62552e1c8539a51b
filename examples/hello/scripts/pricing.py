"""Customization script for the hello example: the host asks it to price orders.

Edit the rules here; the C++ host stays the same.
"""

VAT = 0.20


def price(item: str, quantity: int, unit_price: float) -> str:
    discount = 0.10 if quantity >= 10 else 0.0
    total = quantity * unit_price * (1 - discount) * (1 + VAT)
    note = " (10% bulk discount)" if discount else ""
    return f"{quantity:>3} x {item:<8} = {total:8.2f}{note}"
