VALUE = 5
while True:
    pass
