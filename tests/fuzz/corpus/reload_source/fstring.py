X = 1
Y = f'{X!r:>{X}}'
