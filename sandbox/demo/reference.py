"""Reference data behind the demo generator: real codes, realistic vocabularies.

Everything here is public reference information (GB/T 2260 division codes, GB/T 4754
industry sections) or invented vocabulary; none of it describes a real person or
enterprise. The weights make the synthetic tables look like a large Chinese city
(广州, Guangzhou: exactly 11 districts) without copying any real record.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class District:
    name: str  # as written in records, e.g. 天河区
    code: str  # GB/T 2260 six-digit administrative division code
    enterprise_weight: float  # share of registered enterprises (rough, for realism)
    population: float  # resident population, 10,000s (2020 census, rounded)


CITY = "广州"
CITY_CODE = "440100"

# The 11 districts of Guangzhou with their GB/T 2260 codes.
DISTRICTS: tuple[District, ...] = (
    District("荔湾区", "440103", 6.0, 123.8),
    District("越秀区", "440104", 8.0, 103.9),
    District("海珠区", "440105", 10.0, 181.9),
    District("天河区", "440106", 18.0, 224.2),
    District("白云区", "440111", 15.0, 374.3),
    District("黄埔区", "440112", 9.0, 112.6),
    District("番禺区", "440113", 13.0, 265.8),
    District("花都区", "440114", 7.0, 164.2),
    District("南沙区", "440115", 6.0, 84.6),
    District("从化区", "440117", 2.0, 71.7),
    District("增城区", "440118", 6.0, 146.6),
)
DISTRICT_NAMES = tuple(d.name for d in DISTRICTS)

# County-level GB/T 2260 codes used as places of first registration in identity
# numbers: mostly Guangdong (the city's own districts and the province's other
# cities), plus common origins of people who moved to the city.
BIRTH_DIVISIONS: tuple[str, ...] = (
    *(d.code for d in DISTRICTS),
    "440303",  # 深圳市罗湖区
    "440304",  # 深圳市福田区
    "440305",  # 深圳市南山区
    "440604",  # 佛山市禅城区
    "440605",  # 佛山市南海区
    "440606",  # 佛山市顺德区
    "441900",  # 东莞市
    "442000",  # 中山市
    "440507",  # 汕头市龙湖区
    "440511",  # 汕头市金平区
    "440802",  # 湛江市赤坎区
    "440882",  # 雷州市
    "441402",  # 梅州市梅江区
    "441481",  # 兴宁市
    "441302",  # 惠州市惠城区
    "440703",  # 江门市蓬江区
    "445102",  # 潮州市湘桥区
    "445202",  # 揭阳市榕城区
    "441802",  # 清远市清城区
    "440902",  # 茂名市茂南区
    "430102",  # 长沙市芙蓉区
    "430105",  # 长沙市开福区
    "420106",  # 武汉市武昌区
    "420102",  # 武汉市江岸区
    "450103",  # 南宁市青秀区
    "360102",  # 南昌市东湖区
    "510104",  # 成都市锦江区
    "510107",  # 成都市武侯区
    "500103",  # 重庆市渝中区
    "350203",  # 厦门市思明区
    "410105",  # 郑州市金水区
    "460106",  # 海口市龙华区
    "330106",  # 杭州市西湖区
    "110105",  # 北京市朝阳区
    "310104",  # 上海市徐汇区
    "610113",  # 西安市雁塔区
)


@dataclass(frozen=True)
class Industry:
    section: str  # GB/T 4754-2017 section letter
    name: str
    weight: float  # share of enterprises (0: never generated, still a valid value)
    words: tuple[str, ...]  # industry words (行业表述) used in enterprise names


INDUSTRIES: tuple[Industry, ...] = (
    Industry("A", "农、林、牧、渔业", 1.0, ("农业发展", "生态农业", "水产养殖", "花卉园艺")),
    Industry("B", "采矿业", 0.2, ("矿业", "矿产开发")),
    Industry("C", "制造业", 9.0, ("电子", "机械制造", "服装", "食品", "新材料", "塑胶制品")),
    Industry("D", "电力、热力、燃气及水生产和供应业", 0.6, ("能源", "燃气", "新能源")),
    Industry("E", "建筑业", 5.0, ("建筑工程", "装饰工程", "市政工程", "建设工程")),
    Industry("F", "批发和零售业", 28.0, ("贸易", "商贸", "进出口", "电子商务", "百货")),
    Industry("G", "交通运输、仓储和邮政业", 4.0, ("物流", "供应链管理", "运输", "货运代理")),
    Industry("H", "住宿和餐饮业", 4.0, ("餐饮管理", "酒店管理", "饮食")),
    Industry("I", "信息传输、软件和信息技术服务业", 10.0, ("信息科技", "网络科技", "软件")),
    Industry("J", "金融业", 0.8, ("融资租赁", "商业保理", "融资担保")),
    Industry("K", "房地产业", 3.0, ("房地产开发", "物业管理", "置业")),
    Industry("L", "租赁和商务服务业", 15.0, ("企业管理咨询", "商务服务", "广告", "人力资源")),
    Industry("M", "科学研究和技术服务业", 9.0, ("检测技术", "生物科技", "工程设计", "科技")),
    Industry("N", "水利、环境和公共设施管理业", 1.0, ("环保科技", "环境工程", "园林绿化")),
    Industry("O", "居民服务、修理和其他服务业", 3.0, ("家政服务", "汽车维修", "美容")),
    Industry("P", "教育", 1.5, ("教育科技", "培训")),
    Industry("Q", "卫生和社会工作", 1.0, ("医疗管理", "健康管理")),
    Industry("R", "文化、体育和娱乐业", 2.5, ("文化传播", "体育发展", "影视")),
    Industry("S", "公共管理、社会保障和社会组织", 0.0, ("服务",)),
    Industry("T", "国际组织", 0.0, ("服务",)),
)

# Characters that make up trade names (字号); two are drawn per enterprise.
BRAND_CHARS = (
    "华信宏达瑞丰恒通盛泰鑫源佳利德嘉中广新美益兴安智博创联汇诚和远长金海天星辰越锦粤穗"
    "南方云启航明志立展优睿晟骏翔宇鹏辉耀祥福富隆昌荣顺成万千百合正元亿弘卓凯腾冠峰林森"
    "桥禾谷蓝青朗悦乐尚品格致臻拓捷迅驰威力特奥科思维数"
)

# Surnames with rough frequencies in Guangdong (陈, 黄, 李 lead), including compound ones.
SURNAMES: tuple[tuple[str, float], ...] = (
    ("陈", 9.0),
    ("黄", 7.0),
    ("李", 6.5),
    ("梁", 4.0),
    ("林", 4.0),
    ("张", 4.0),
    ("刘", 3.5),
    ("何", 3.0),
    ("罗", 2.8),
    ("郭", 2.0),
    ("吴", 2.5),
    ("周", 2.0),
    ("谢", 2.0),
    ("郑", 2.0),
    ("冯", 1.6),
    ("邓", 1.8),
    ("曾", 1.6),
    ("叶", 1.6),
    ("彭", 1.2),
    ("苏", 1.2),
    ("蔡", 1.3),
    ("余", 1.1),
    ("许", 1.1),
    ("杨", 2.0),
    ("朱", 1.2),
    ("潘", 1.1),
    ("钟", 1.3),
    ("卢", 1.3),
    ("王", 2.5),
    ("赵", 0.8),
    ("孙", 0.6),
    ("徐", 0.9),
    ("马", 0.7),
    ("胡", 0.9),
    ("高", 0.7),
    ("宋", 0.5),
    ("唐", 0.7),
    ("韩", 0.4),
    ("袁", 0.6),
    ("邹", 0.6),
    ("肖", 0.8),
    ("谭", 1.0),
    ("廖", 1.0),
    ("温", 0.8),
    ("邱", 0.8),
    ("江", 0.6),
    ("伍", 0.6),
    ("麦", 0.5),
    ("欧阳", 0.3),
    ("司徒", 0.2),
    ("上官", 0.05),
)
GIVEN_MALE = "伟强军杰俊浩明辉勇志文斌涛超鹏华建国平东海峰宇翔晨锋健毅豪荣坤"
GIVEN_FEMALE = "芳敏静丽娟艳玲婷霞燕红梅琳莹颖欣怡雪慧倩佳雯琪洁薇晓秀丹萍莉嘉"
GIVEN_ANY = "子文嘉俊思晓家永少志小宏锦泽雅天汉卓"
# Full names with a middle dot (U+00B7, as in GB 11643 records) for names transcribed
# from minority languages; a small share of people carry one.
DOTTED_NAMES_MALE = ("艾力·买买提", "阿不都·热合曼", "穆罕默德·伊明", "扎西·多吉")
DOTTED_NAMES_FEMALE = ("古丽·阿不都", "热依拉·吐尔逊", "阿依古丽·买买提", "卓玛·次仁")
