VALUE = 4
def __reload__(old):
    global VALUE
    VALUE = old.get('VALUE', 0) + 1
