VALUE = 3
raise ValueError('bad')
